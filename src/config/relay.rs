//! `[delivery.relay]`: the smarthost that tenants with `delivery = relay`
//! send through.

use std::path::PathBuf;

use anyhow::bail;
use serde::Deserialize;

/// How the connection to the smarthost is secured. There is deliberately no
/// plaintext mode: the relay carries credentials and every tenant's mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RelayTls {
    /// Plain connect, then STARTTLS (submission, port 587).
    Starttls,
    /// TLS from the first byte (submissions, port 465).
    Implicit,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    /// Host name (checked against the smarthost's certificate) or IP.
    pub host: String,
    pub port: u16,
    pub tls: RelayTls,
    /// AUTH user; absent means the smarthost takes mail without AUTH.
    pub username: Option<String>,
    /// The password in the config file...
    pub password: Option<String>,
    /// ...or the name of an environment variable holding it.
    pub password_env: Option<String>,
    /// PEM file of the certificates trusted for the smarthost (its CA, or
    /// its own self-signed certificate). Absent: the system's roots.
    pub ca_file: Option<PathBuf>,
}

impl RelayConfig {
    pub(super) fn validate(&self) -> anyhow::Result<()> {
        if self.host.trim().is_empty() || self.host.contains(char::is_whitespace) {
            bail!("config: delivery.relay.host must be a host name or IP address");
        }
        if self.port == 0 {
            bail!("config: delivery.relay.port must be at least 1");
        }
        if self.password.is_some() && self.password_env.is_some() {
            bail!("config: delivery.relay: set password or password_env, not both");
        }
        let has_password = self.password.is_some() || self.password_env.is_some();
        match (&self.username, has_password) {
            (Some(_), false) => {
                bail!("config: delivery.relay.username needs password or password_env")
            }
            (None, true) => bail!("config: delivery.relay.password needs username"),
            _ => Ok(()),
        }
    }

    /// The AUTH password, read from the environment when configured so.
    pub fn resolve_password(&self) -> anyhow::Result<Option<String>> {
        if let Some(var) = &self.password_env {
            return match std::env::var(var) {
                Ok(p) if !p.is_empty() => Ok(Some(p)),
                _ => bail!(
                    "delivery.relay.password_env: environment variable {var} is not set (or empty)"
                ),
            };
        }
        Ok(self.password.clone())
    }
}
