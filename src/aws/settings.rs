//! The `[aws]` config section: where sesame finds SES, its feedback queue
//! and the S3 buckets that SES receipt rules write into.
//!
//! Credentials are deliberately absent: they come from the standard AWS
//! chain (environment, profile, instance or task role), never from
//! sesame's config file.

use anyhow::bail;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsConfig {
    /// AWS region of SES, SQS and S3; absent means the standard chain
    /// (`AWS_REGION`, profile).
    pub region: Option<String>,
    /// Sends every AWS call here instead of the AWS endpoints (tests point
    /// it at moto; also useful for VPC endpoints).
    pub endpoint_url: Option<String>,
    /// SQS queue of SES event notifications (Bounce, Complaint, Delivery,
    /// DeliveryDelay); absent means no feedback worker.
    pub feedback_queue_url: Option<String>,
    /// SQS long-poll wait (1-20 seconds).
    #[serde(default = "default_wait")]
    pub wait_time_secs: i32,
    /// How long a received SQS message stays invisible to other consumers
    /// while this node works on it.
    #[serde(default = "default_visibility")]
    pub visibility_timeout_secs: i32,
    /// SES receipt-rule S3 buckets, each mapped to one tenant.
    #[serde(default)]
    pub inbound: Vec<InboundMapping>,
}

/// One `[[aws.inbound]]`: objects under `s3://bucket/prefix` belong to
/// `tenant`, and `queue_url` carries their notifications.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundMapping {
    pub queue_url: String,
    pub bucket: String,
    #[serde(default)]
    pub prefix: String,
    pub tenant: String,
}

fn default_wait() -> i32 {
    20
}

fn default_visibility() -> i32 {
    60
}

impl AwsConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        if !(1..=20).contains(&self.wait_time_secs) {
            bail!("config: aws.wait_time_secs must be 1-20 (the SQS long-poll limit)");
        }
        if !(1..=43_200).contains(&self.visibility_timeout_secs) {
            bail!("config: aws.visibility_timeout_secs must be 1-43200 (the SQS limit)");
        }
        if let Some(url) = &self.endpoint_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            bail!("config: aws.endpoint_url '{url}' must start with http:// or https://");
        }
        for (i, m) in self.inbound.iter().enumerate() {
            if m.queue_url.is_empty() || m.bucket.is_empty() || m.tenant.is_empty() {
                bail!("config: aws.inbound[{i}] needs queue_url, bucket and tenant");
            }
        }
        Ok(())
    }

    /// The tenant that owns an object, by the longest matching prefix.
    pub fn tenant_for_object(&self, bucket: &str, key: &str) -> Option<&InboundMapping> {
        self.inbound
            .iter()
            .filter(|m| m.bucket == bucket && key.starts_with(&m.prefix))
            .max_by_key(|m| m.prefix.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(bucket: &str, prefix: &str, tenant: &str) -> InboundMapping {
        InboundMapping {
            queue_url: "http://127.0.0.1/q".into(),
            bucket: bucket.into(),
            prefix: prefix.into(),
            tenant: tenant.into(),
        }
    }

    #[test]
    fn the_longest_prefix_names_the_tenant() {
        let config: AwsConfig = toml::from_str("").unwrap();
        let config = AwsConfig {
            inbound: vec![
                mapping("mail", "", "catchall"),
                mapping("mail", "acme/", "acme"),
                mapping("other", "acme/", "beta"),
            ],
            ..config
        };
        let tenant = |b: &str, k: &str| config.tenant_for_object(b, k).map(|m| m.tenant.as_str());
        assert_eq!(tenant("mail", "acme/abc"), Some("acme"));
        assert_eq!(tenant("mail", "zeta/abc"), Some("catchall"));
        assert_eq!(tenant("other", "acme/x"), Some("beta"));
        assert_eq!(tenant("other", "x"), None);
        assert_eq!(tenant("nobody", "acme/x"), None);
    }

    #[test]
    fn bad_values_are_refused_with_the_key() {
        let config: AwsConfig = toml::from_str("wait_time_secs = 30").unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("aws.wait_time_secs"), "{err}");
        let config: AwsConfig = toml::from_str("endpoint_url = \"127.0.0.1:4566\"").unwrap();
        assert!(config.validate().is_err());
    }
}
