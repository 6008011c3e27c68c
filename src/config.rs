//! Typed configuration. Every default lives here, and `validate` refuses a
//! bad config at start with a message that names the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

mod relay;
pub use relay::{RelayConfig, RelayTls};

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
    #[serde(default)]
    pub scan: ScanConfig,
    #[serde(default)]
    pub dns: DnsConfig,
    #[serde(default)]
    pub dns_server: DnsServerConfig,
    #[serde(default)]
    pub delivery: DeliveryConfig,
    /// The tenant HTTP API; absent means no API.
    pub api: Option<ApiConfig>,
    pub dev: Option<DevConfig>,
    /// Absent: nothing talks to AWS.
    pub aws: Option<crate::aws::settings::AwsConfig>,
}

/// The tenant HTTP API (`[api]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// `ip:port`; port 0 picks a free port (reported in the ready line).
    pub listen: String,
}

impl ApiConfig {
    pub fn addr(&self) -> anyhow::Result<SocketAddr> {
        self.listen
            .parse()
            .with_context(|| format!("config: api.listen '{}' is not an ip:port", self.listen))
    }
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

/// What to do with a message that could not be scanned completely.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScanFailurePolicy {
    /// `451 4.7.0`: nothing is queued, the client retries later.
    Tempfail,
    /// Queue it, tagged `X-Sesame-Virus-Verdict: PROCESSING_FAILED (...)`.
    AcceptAndTag,
    /// A permanent 5xx.
    Reject,
}

/// What to do with a message in which clamd found malware.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InfectedAction {
    /// Replace each infected part by a text/plain notice; deliver the rest.
    Strip,
    /// `554 5.7.1 Message rejected: virus detected (<signature>)`.
    Reject,
}

impl InfectedAction {
    pub fn as_str(self) -> &'static str {
        match self {
            InfectedAction::Strip => "strip",
            InfectedAction::Reject => "reject",
        }
    }

    pub fn parse(s: &str) -> Option<InfectedAction> {
        match s {
            "strip" => Some(InfectedAction::Strip),
            "reject" => Some(InfectedAction::Reject),
            _ => None,
        }
    }
}

/// Where clamd listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClamdAddress {
    /// `host:port`
    Tcp(String),
    Unix(PathBuf),
}

impl ClamdAddress {
    /// `tcp://host:port` or `unix:///path/to/clamd.ctl`.
    pub fn parse(s: &str) -> Option<ClamdAddress> {
        if let Some(hostport) = s.strip_prefix("tcp://") {
            let (host, port) = hostport.rsplit_once(':')?;
            (!host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0))
                .then(|| ClamdAddress::Tcp(hostport.to_string()))
        } else {
            let path = s.strip_prefix("unix://")?;
            path.starts_with('/')
                .then(|| ClamdAddress::Unix(PathBuf::from(path)))
        }
    }
}

/// Attachment scanning with clamd (`[scan]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScanConfig {
    pub enabled: bool,
    /// `tcp://host:port` or `unix:///path`.
    pub clamd: String,
    /// For all the parts of one message together.
    pub timeout_secs: u64,
    /// Decoded bytes per part. clamd cannot be asked for its StreamMaxLength,
    /// so this must be configured no larger than it.
    pub max_part_bytes: usize,
    /// Concurrent clamd connections (and idle ones kept for reuse).
    pub connections: usize,
    pub oversize: ScanFailurePolicy,
    pub on_scanner_error: ScanFailurePolicy,
    /// Default for tenants without their own `--on-infected`.
    pub on_infected: InfectedAction,
    pub notify_email: Option<String>,
    pub notify_webhook: Option<String>,
}

impl Default for ScanConfig {
    fn default() -> Self {
        ScanConfig {
            // Off unless configured: a gateway without a reachable clamd
            // would otherwise answer 451 to everything. `serve` warns.
            enabled: false,
            clamd: "tcp://127.0.0.1:3310".into(),
            timeout_secs: 30,
            // Debian's clamd.conf ships StreamMaxLength 25M.
            max_part_bytes: 25 * 1024 * 1024,
            connections: 8,
            // An oversize part will be oversize on every retry: say so now.
            oversize: ScanFailurePolicy::Reject,
            // clamd down is temporary: the client keeps the message and
            // retries, nothing is lost and nothing passes unscanned.
            on_scanner_error: ScanFailurePolicy::Tempfail,
            on_infected: InfectedAction::Strip,
            notify_email: None,
            notify_webhook: None,
        }
    }
}

impl ScanConfig {
    pub fn address(&self) -> anyhow::Result<ClamdAddress> {
        ClamdAddress::parse(&self.clamd).with_context(|| {
            format!(
                "config: scan.clamd '{}' must be tcp://host:port or unix:///absolute/path",
                self.clamd
            )
        })
    }

    fn validate(&self) -> anyhow::Result<()> {
        self.address()?;
        for (key, value) in [
            ("scan.timeout_secs", self.timeout_secs as usize),
            ("scan.max_part_bytes", self.max_part_bytes),
            ("scan.connections", self.connections),
        ] {
            if value == 0 {
                bail!("config: {key} must be at least 1");
            }
        }
        if let Some(email) = &self.notify_email
            && crate::types::EmailAddress::parse(email).is_none()
        {
            bail!("config: scan.notify_email '{email}' is not an email address");
        }
        if let Some(url) = &self.notify_webhook {
            let ok = reqwest::Url::parse(url)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            if !ok {
                bail!("config: scan.notify_webhook '{url}' must be an http:// or https:// URL");
            }
        }
        Ok(())
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

/// What sesame publishes for its domains and how it checks them (`[dns]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// Resolvers used to verify records, as `ip:port`; empty means the
    /// system's resolv.conf.
    pub nameservers: Vec<String>,
    /// Where the domains' MX records (and MAIL FROM MX) point. Defaults to
    /// `hostname`.
    pub public_hostname: Option<String>,
    /// The gateway's sending addresses, for the SPF records.
    pub sending_ips: Vec<String>,
    /// Extra `include:` mechanisms for the SPF records.
    pub spf_includes: Vec<String>,
    /// DMARC policy published for new domains: none, quarantine or reject.
    pub dmarc_policy: String,
    /// Optional `rua=` address for aggregate reports.
    pub dmarc_rua: Option<String>,
    /// NS names in the zones sesame serves. Defaults to `public_hostname`.
    pub zone_nameservers: Vec<String>,
    /// PENDING (and TEMPORARY_FAILURE) turn FAILED after this long.
    pub pending_window_secs: i64,
    /// How often `serve` re-checks every domain.
    pub recheck_interval_secs: u64,
    /// How long a replaced DKIM key stays published after rotation.
    pub rotation_grace_secs: i64,
    /// The MAIL FROM domain used when a domain's own (`mail.<domain>`) is
    /// not verified and its behaviour is USE_DEFAULT_VALUE. Defaults to
    /// `hostname`.
    pub default_mail_from_domain: Option<String>,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            nameservers: Vec::new(),
            public_hostname: None,
            sending_ips: Vec::new(),
            spf_includes: Vec::new(),
            dmarc_policy: "quarantine".into(),
            dmarc_rua: None,
            zone_nameservers: Vec::new(),
            pending_window_secs: 72 * 3600,
            recheck_interval_secs: 3600,
            rotation_grace_secs: 48 * 3600,
            default_mail_from_domain: None,
        }
    }
}

/// The embedded authoritative DNS server (`[dns_server]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsServerConfig {
    pub enabled: bool,
    /// UDP and TCP on the same address.
    pub bind: String,
    /// How often zones are rebuilt when domains or keys changed.
    pub refresh_ms: u64,
}

impl Default for DnsServerConfig {
    fn default() -> Self {
        DnsServerConfig {
            enabled: false,
            bind: "127.0.0.1:2053".into(),
            refresh_ms: 1000,
        }
    }
}

/// The delivery engine (`[delivery]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Run the queue workers inside `serve`.
    pub enabled: bool,
    /// Concurrent deliveries in total.
    pub workers: usize,
    /// Concurrent deliveries to one destination domain.
    pub per_domain: usize,
    /// How often the queue is polled for due recipients (milliseconds).
    pub poll_ms: u64,
    /// First retry delay after a transient failure; doubles each time.
    pub retry_base_secs: i64,
    /// Upper bound on one retry delay.
    pub retry_max_delay_secs: i64,
    /// Transient failures turn into a bounce once a message is this old.
    pub max_age_secs: i64,
    /// Port of remote MX hosts (25; tests point it at a local peer).
    pub mx_port: u16,
    /// Timeout for connecting and for each SMTP command.
    pub smtp_timeout_secs: u64,
    /// Transport for gateway-generated mail (DSNs, virus notifications,
    /// auto-replies), queued under `@system`: `capture` or `mx`.
    pub system_transport: String,
    /// The smarthost of tenants whose delivery is `relay`.
    pub relay: Option<RelayConfig>,
    /// Delivered and bounced mail leaves queue.db this long after its last
    /// recipient finished (captured mail stays).
    pub retention_hours: i64,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            enabled: true,
            workers: 32,
            per_domain: 4,
            poll_ms: 500,
            retry_base_secs: 60,
            retry_max_delay_secs: 3600,
            max_age_secs: 24 * 3600,
            mx_port: 25,
            smtp_timeout_secs: 60,
            system_transport: "capture".into(),
            relay: None,
            retention_hours: 168,
        }
    }
}

impl DeliveryConfig {
    fn validate(&self) -> anyhow::Result<()> {
        for (key, value) in [
            ("delivery.workers", self.workers as i64),
            ("delivery.per_domain", self.per_domain as i64),
            ("delivery.poll_ms", self.poll_ms as i64),
            ("delivery.retry_base_secs", self.retry_base_secs),
            ("delivery.retry_max_delay_secs", self.retry_max_delay_secs),
            ("delivery.max_age_secs", self.max_age_secs),
            ("delivery.mx_port", self.mx_port as i64),
            ("delivery.smtp_timeout_secs", self.smtp_timeout_secs as i64),
        ] {
            if value < 1 {
                bail!("config: {key} must be at least 1");
            }
        }
        if !["capture", "mx"].contains(&self.system_transport.as_str()) {
            bail!("config: delivery.system_transport must be capture or mx");
        }
        if let Some(relay) = &self.relay {
            relay.validate()?;
        }
        if self.retention_hours < 0 {
            bail!("config: delivery.retention_hours must not be negative");
        }
        Ok(())
    }
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

    pub fn public_hostname(&self) -> &str {
        self.dns
            .public_hostname
            .as_deref()
            .unwrap_or(&self.hostname)
    }

    pub fn default_mail_from_domain(&self) -> &str {
        self.dns
            .default_mail_from_domain
            .as_deref()
            .unwrap_or(&self.hostname)
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
        self.validate_dns()?;
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
            // The dev API key is as public as the dev SMTP password.
            if let Some(api) = &self.api
                && !api.addr()?.ip().is_loopback()
            {
                bail!(
                    "config: dev.enabled provisions a fixed API key, which is refused while \
                     api.listen is the non-loopback address {}; bind it to 127.0.0.1 or set \
                     dev.enabled = false",
                    api.listen
                );
            }
            if crate::types::normalize_domain(&dev.domain).is_none() {
                bail!("config: dev.domain '{}' is not a domain name", dev.domain);
            }
        }
        self.scan.validate()?;
        self.delivery.validate()?;
        if let Some(api) = &self.api {
            api.addr()?;
        }
        if let Some(aws) = &self.aws {
            aws.validate()?;
        }
        Ok(())
    }
}

impl Config {
    fn validate_dns(&self) -> anyhow::Result<()> {
        let dns = &self.dns;
        for ns in &dns.nameservers {
            ns.parse::<SocketAddr>().map_err(|_| {
                anyhow::anyhow!("config: dns.nameservers entry '{ns}' is not an ip:port")
            })?;
        }
        for ip in &dns.sending_ips {
            ip.parse::<std::net::IpAddr>().map_err(|_| {
                anyhow::anyhow!("config: dns.sending_ips entry '{ip}' is not an IP address")
            })?;
        }
        if !["none", "quarantine", "reject"].contains(&dns.dmarc_policy.as_str()) {
            bail!("config: dns.dmarc_policy must be none, quarantine or reject");
        }
        for (key, name) in [
            ("dns.public_hostname", Some(self.public_hostname())),
            (
                "dns.default_mail_from_domain",
                Some(self.default_mail_from_domain()),
            ),
        ] {
            if name.and_then(crate::types::normalize_domain).is_none() {
                bail!("config: {key} must be a host name");
            }
        }
        if dns.pending_window_secs < 0 || dns.rotation_grace_secs < 0 {
            bail!(
                "config: dns.pending_window_secs and dns.rotation_grace_secs must not be negative"
            );
        }
        if dns.recheck_interval_secs == 0 {
            bail!("config: dns.recheck_interval_secs must be at least 1");
        }
        if self.dns_server.enabled {
            self.dns_server.bind.parse::<SocketAddr>().map_err(|_| {
                anyhow::anyhow!(
                    "config: dns_server.bind '{}' is not an ip:port",
                    self.dns_server.bind
                )
            })?;
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

    #[test]
    fn the_api_needs_an_address_and_loopback_in_dev_mode() {
        let err = parse("[api]\nlisten = \"8025\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("api.listen"), "{err:#}");
        let err = parse(
            "[api]\nlisten = \"0.0.0.0:8025\"\n[dev]\nenabled = true\ntenant = \"dev\"\n\
             domain = \"dev.sesame.test\"\nusername = \"dev\"\npassword = \"dev\"\n",
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("api.listen"), "{err:#}");
        let config = parse("[api]\nlisten = \"127.0.0.1:0\"\n").unwrap();
        assert_eq!(config.api.unwrap().addr().unwrap().port(), 0);
        assert!(parse("").unwrap().api.is_none());
    }

    #[test]
    fn scan_keys_are_checked_by_name() {
        for (text, key) in [
            ("[scan]\nclamd = \"127.0.0.1:3310\"\n", "scan.clamd"),
            (
                "[scan]\nclamd = \"unix://relative/clamd.ctl\"\n",
                "scan.clamd",
            ),
            ("[scan]\ntimeout_secs = 0\n", "scan.timeout_secs"),
            ("[scan]\nconnections = 0\n", "scan.connections"),
            ("[scan]\nnotify_email = \"nobody\"\n", "scan.notify_email"),
            (
                "[scan]\nnotify_webhook = \"ftp://x.test/\"\n",
                "scan.notify_webhook",
            ),
            ("[scan]\noversize = \"drop\"\n", "oversize"),
            ("[scan]\nenabeld = true\n", "enabeld"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(format!("{err:#}").contains(key), "{text}: {err:#}");
        }
        let config = parse(
            "[scan]\nclamd = \"unix:///run/clamav/clamd.ctl\"\non_scanner_error = \"accept-and-tag\"\n",
        )
        .unwrap();
        assert_eq!(
            config.scan.address().unwrap(),
            ClamdAddress::Unix("/run/clamav/clamd.ctl".into())
        );
        assert_eq!(
            config.scan.on_scanner_error,
            ScanFailurePolicy::AcceptAndTag
        );
        let defaults = parse("").unwrap().scan;
        assert!(!defaults.enabled);
        assert_eq!(defaults.on_scanner_error, ScanFailurePolicy::Tempfail);
        assert_eq!(
            defaults.address().unwrap(),
            ClamdAddress::Tcp("127.0.0.1:3310".into())
        );
    }
}
