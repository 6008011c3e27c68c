//! The records a domain needs, derived from config and its DKIM keys. One
//! function computes them; `domain records`, verification and the embedded
//! DNS server all use it, so they can never disagree.

use serde::Serialize;

use crate::config::Config;
use crate::control::{DkimKey, Domain, KeyType};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    Mx,
    Spf,
    Dkim,
    Dmarc,
    MailFromMx,
    MailFromSpf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Record {
    /// Fully qualified, without the trailing dot.
    pub name: String,
    #[serde(rename = "type")]
    pub rtype: &'static str,
    /// MX: `10 host`; TXT: the whole string (split only in zone files).
    pub value: String,
    pub purpose: Purpose,
    /// The DKIM selector, for DKIM records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
}

pub fn for_domain(domain: &Domain, config: &Config) -> Vec<Record> {
    let d = &domain.domain;
    let mx_value = format!("10 {}", config.public_hostname());
    let spf = spf_value(config);
    let record = |name: String, rtype, value: String, purpose| Record {
        name,
        rtype,
        value,
        purpose,
        selector: None,
    };
    let mut records = vec![
        record(d.clone(), "MX", mx_value.clone(), Purpose::Mx),
        record(d.clone(), "TXT", spf.clone(), Purpose::Spf),
    ];
    records.extend(domain.published_keys().map(|key| Record {
        selector: Some(key.selector.clone()),
        ..record(
            format!("{}._domainkey.{d}", key.selector),
            "TXT",
            dkim_value(key),
            Purpose::Dkim,
        )
    }));
    records.push(record(
        format!("_dmarc.{d}"),
        "TXT",
        dmarc_value(config),
        Purpose::Dmarc,
    ));
    records.push(record(
        domain.mail_from_domain.clone(),
        "MX",
        mx_value,
        Purpose::MailFromMx,
    ));
    records.push(record(
        domain.mail_from_domain.clone(),
        "TXT",
        spf,
        Purpose::MailFromSpf,
    ));
    records
}

pub fn dkim_value(key: &DkimKey) -> String {
    let k = match key.key_type {
        KeyType::Rsa => "rsa",
        KeyType::Ed25519 => "ed25519",
    };
    format!("v=DKIM1; k={k}; p={}", key.public_key)
}

/// `ip4:`/`ip6:` for the configured sending IPs, the includes, and `-all`.
/// Without sending IPs the gateway host's own addresses (`a:`) are named.
fn spf_value(config: &Config) -> String {
    let mut parts = vec!["v=spf1".to_string()];
    for ip in &config.dns.sending_ips {
        let kind = if ip.contains(':') { "ip6" } else { "ip4" };
        parts.push(format!("{kind}:{ip}"));
    }
    if config.dns.sending_ips.is_empty() {
        parts.push(format!("a:{}", config.public_hostname()));
    }
    parts.extend(
        config
            .dns
            .spf_includes
            .iter()
            .map(|i| format!("include:{i}")),
    );
    parts.push("-all".into());
    parts.join(" ")
}

fn dmarc_value(config: &Config) -> String {
    let mut value = format!("v=DMARC1; p={}", config.dns.dmarc_policy);
    if let Some(rua) = &config.dns.dmarc_rua {
        value.push_str(&format!(
            "; rua=mailto:{}",
            rua.trim_start_matches("mailto:")
        ));
    }
    value
}
