//! Typed configuration. Every default lives here, and `validate` refuses a
//! bad config at start with a message that names the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Name used in the greeting, Message-ID and Received headers.
    #[serde(default = "default_hostname")]
    pub hostname: String,
    /// SES region: credential derivation and reply texts.
    #[serde(default = "default_region")]
    pub region: String,
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default, rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub auth: AuthConfig,
    pub dev: Option<DevConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    #[serde(default = "default_cert")]
    pub cert: PathBuf,
    #[serde(default = "default_key")]
    pub key: PathBuf,
    /// Create a self-signed certificate with rcgen when the files are missing.
    #[serde(default)]
    pub generate_self_signed: bool,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert: default_cert(),
            key: default_key(),
            generate_self_signed: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerKind {
    /// Port 25 style: STARTTLS offered, no AUTH, only tenant domains.
    Mx,
    /// Port 587 style: STARTTLS then AUTH required.
    Submission,
    /// Port 465 style: implicit TLS, then AUTH required.
    Submissions,
}

impl ListenerKind {
    pub fn is_submission(self) -> bool {
        self != ListenerKind::Mx
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ListenerKind::Mx => "mx",
            ListenerKind::Submission => "submission",
            ListenerKind::Submissions => "submissions",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub name: String,
    pub kind: ListenerKind,
    pub bind: String,
}

impl ListenerConfig {
    pub fn addr(&self) -> anyhow::Result<SocketAddr> {
        self.bind.parse().with_context(|| {
            format!(
                "listener '{}': bind '{}' is not an ip:port",
                self.name, self.bind
            )
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_message_size: usize,
    pub max_recipients: usize,
    /// Octets per line including CRLF (RFC 5321: 1000).
    pub max_line_length: usize,
    pub max_command_line: usize,
    pub command_timeout_secs: u64,
    pub data_timeout_secs: u64,
    pub max_errors: u32,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub shutdown_grace_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // SES says 40 MB; decimal so that a "41 MB" message is refused
            // whichever way its sender counts megabytes.
            max_message_size: 40_000_000,
            max_recipients: 50,
            max_line_length: 1000,
            // AUTH lines may carry long initial responses (RFC 4954: 12288).
            max_command_line: 12288,
            command_timeout_secs: 300,
            data_timeout_secs: 600,
            max_errors: 10,
            max_connections: 1000,
            max_connections_per_ip: 100,
            shutdown_grace_secs: 30,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Delay before answering a failed AUTH, multiplied by recent failures.
    pub failure_delay_ms: u64,
    /// Failures per IP or per username within the window before 421.
    pub max_failures: u32,
    pub failure_window_secs: u64,
    /// How long a successful verification is remembered (argon2 is slow on
    /// purpose; re-hashing on every connection would cap throughput).
    pub cache_ttl_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            failure_delay_ms: 1000,
            max_failures: 10,
            failure_window_secs: 900,
            cache_ttl_secs: 300,
        }
    }
}

/// The offline developer set-up. Never meant for a public listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevConfig {
    pub enabled: bool,
    pub tenant: String,
    /// Marked verified without DNS.
    pub domain: String,
    /// A static SMTP credential, accepted only while every listener is on
    /// loopback.
    pub username: String,
    pub password: String,
}

fn default_hostname() -> String {
    "localhost".into()
}
fn default_region() -> String {
    "us-east-1".into()
}
fn default_data_dir() -> PathBuf {
    "data".into()
}
fn default_cert() -> PathBuf {
    "certs/dev.crt".into()
}
fn default_key() -> PathBuf {
    "certs/dev.key".into()
}

impl Config {
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        let config: Config =
            toml::from_str(&text).with_context(|| format!("config {}", path.display()))?;
        Ok(config)
    }

    /// The dev section, when it is switched on.
    pub fn dev(&self) -> Option<&DevConfig> {
        self.dev.as_ref().filter(|d| d.enabled)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if self.hostname.is_empty() || self.hostname.contains(char::is_whitespace) {
            bail!("config: hostname must be a host name without spaces");
        }
        if !self
            .region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            || self.region.is_empty()
        {
            bail!("config: region '{}' is not an AWS region name", self.region);
        }
        let mut names = std::collections::HashSet::new();
        for l in &self.listeners {
            if !names.insert(&l.name) {
                bail!("config: listener.name '{}' is used twice", l.name);
            }
            l.addr().context("config: listener.bind")?;
        }
        let limits = &self.limits;
        for (key, value) in [
            ("limits.max_message_size", limits.max_message_size),
            ("limits.max_recipients", limits.max_recipients),
            ("limits.max_connections", limits.max_connections),
            (
                "limits.max_connections_per_ip",
                limits.max_connections_per_ip,
            ),
            (
                "limits.command_timeout_secs",
                limits.command_timeout_secs as usize,
            ),
            (
                "limits.data_timeout_secs",
                limits.data_timeout_secs as usize,
            ),
            ("limits.max_errors", limits.max_errors as usize),
            ("auth.max_failures", self.auth.max_failures as usize),
        ] {
            if value == 0 {
                bail!("config: {key} must be at least 1");
            }
        }
        if limits.max_line_length < 78 {
            bail!(
                "config: limits.max_line_length must be at least 78 (RFC 5322 recommends 78, requires 998)"
            );
        }
        if limits.max_command_line < 512 {
            bail!("config: limits.max_command_line must be at least 512 (RFC 5321 4.5.3.1.4)");
        }
        if let Some(dev) = self.dev() {
            if let Some(l) = self
                .listeners
                .iter()
                .find(|l| l.addr().map(|a| !a.ip().is_loopback()).unwrap_or(true))
            {
                bail!(
                    "config: dev.enabled provisions the static credential '{}', which is refused \
                     while listener '{}' binds to the non-loopback address {}; bind it to 127.0.0.1 \
                     or set dev.enabled = false",
                    dev.username,
                    l.name,
                    l.bind
                );
            }
            if crate::types::normalize_domain(&dev.domain).is_none() {
                bail!("config: dev.domain '{}' is not a domain name", dev.domain);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<Config> {
        let config: Config = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    #[test]
    fn shipped_configs_are_valid() {
        for path in ["config/sesame.toml", "config/production.example.toml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
            let config = Config::load(&path).unwrap();
            config.validate().unwrap();
        }
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = parse("[limits]\nmax_recipent = 3\n").unwrap_err();
        assert!(format!("{err:#}").contains("max_recipent"), "{err:#}");
    }

    #[test]
    fn zero_limits_are_refused_by_name() {
        let err = parse("[limits]\nmax_recipients = 0\n").unwrap_err();
        assert!(err.to_string().contains("limits.max_recipients"));
    }

    #[test]
    fn static_credentials_need_loopback_listeners() {
        let err = parse(
            r#"
            [[listener]]
            name = "mx"
            kind = "mx"
            bind = "0.0.0.0:25"
            [dev]
            enabled = true
            tenant = "dev"
            domain = "dev.sesame.test"
            username = "dev"
            password = "dev"
            "#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("dev.enabled"), "{err}");
    }
}
