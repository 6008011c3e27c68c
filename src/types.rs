//! Plain value types shared by every layer: addresses, domains and message ids.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// A mailbox address as used in SMTP envelopes and identities.
///
/// The local part keeps its case (SES treats address identities as
/// case-sensitive in the local part); the domain is lower-cased.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EmailAddress {
    local: String,
    domain: String,
}

impl EmailAddress {
    /// Parses `local@domain`, refusing anything that could not be routed.
    pub fn parse(raw: &str) -> Option<Self> {
        let (local, domain) = raw.rsplit_once('@')?;
        if local.is_empty() || local.len() > 64 || raw.len() > 254 {
            return None;
        }
        if local.chars().any(|c| c.is_control() || c == ' ') && !local.starts_with('"') {
            return None;
        }
        let domain = normalize_domain(domain)?;
        Some(EmailAddress {
            local: local.to_string(),
            domain,
        })
    }

    pub fn local(&self) -> &str {
        &self.local
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The local part without a `+label` suffix, so `user+tag` matches `user`.
    pub fn base_local(&self) -> &str {
        match self.local.split_once('+') {
            Some((base, _)) if !base.is_empty() => base,
            _ => &self.local,
        }
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

/// Lower-cases and checks a DNS domain name (or an address literal).
pub fn normalize_domain(raw: &str) -> Option<String> {
    let domain = raw.trim_end_matches('.').to_ascii_lowercase();
    if domain.starts_with('[') && domain.ends_with(']') {
        return Some(domain);
    }
    if domain.is_empty() || domain.len() > 253 {
        return None;
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .chars()
                .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
    };
    domain.split('.').all(label_ok).then_some(domain)
}

/// True when `domain` is `parent` or one of its subdomains.
pub fn domain_within(domain: &str, parent: &str) -> bool {
    domain == parent
        || (domain.len() > parent.len()
            && domain.ends_with(parent)
            && domain.as_bytes()[domain.len() - parent.len() - 1] == b'.')
}

/// An SES-shaped message id: `0107` + epoch millis (12 hex digits), a UUID,
/// and `-000000`. The same id names the message in replies, the queue and
/// the `Message-ID` header.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MessageId(String);

impl MessageId {
    pub fn generate() -> Self {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        MessageId(format!(
            "0107{:012x}-{}-000000",
            millis & 0xffff_ffff_ffff,
            uuid::Uuid::new_v4()
        ))
    }

    pub fn from_stored(id: String) -> Self {
        MessageId(id)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Seconds since the Unix epoch, the time unit of every stored timestamp.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_keeps_local_case_and_lowers_domain() {
        let a = EmailAddress::parse("Alice+news@Example.COM").unwrap();
        assert_eq!(a.local(), "Alice+news");
        assert_eq!(a.domain(), "example.com");
        assert_eq!(a.base_local(), "Alice");
    }

    #[test]
    fn address_without_domain_is_refused() {
        assert!(EmailAddress::parse("alice").is_none());
        assert!(EmailAddress::parse("alice@").is_none());
        assert!(EmailAddress::parse("@example.com").is_none());
        assert!(EmailAddress::parse("a@exa mple.com").is_none());
    }

    #[test]
    fn subdomains_are_within_their_parent_only() {
        assert!(domain_within("a.example.com", "example.com"));
        assert!(domain_within("example.com", "example.com"));
        assert!(!domain_within("badexample.com", "example.com"));
    }

    #[test]
    fn message_id_has_the_ses_shape() {
        let id = MessageId::generate();
        let parts: Vec<&str> = id.as_str().split('-').collect();
        assert_eq!(parts.len(), 7);
        assert_eq!(parts[0].len(), 16);
        assert!(parts[0].starts_with("0107"));
        assert_eq!(parts[6], "000000");
    }
}
