//! DKIM verification of mail received on MX (mail-auth), on the message
//! exactly as it arrived: before scanning strips anything, so that a
//! stripped attachment can never turn a valid signature into a failure.

use mail_auth::common::headers::HeaderWriter;
use mail_auth::{AuthenticatedMessage, AuthenticationResults, MessageAuthenticator};

use crate::dns::resolver;
use crate::proto::headers::HeaderBlock;

pub struct DkimVerifier {
    authenticator: MessageAuthenticator,
    hostname: String,
}

impl DkimVerifier {
    /// Looks keys up on `nameservers` (`ip:port`; empty: the system's).
    pub fn new(nameservers: &[String], hostname: &str) -> anyhow::Result<DkimVerifier> {
        let (config, options) = resolver::resolver_settings(nameservers)?;
        let authenticator = MessageAuthenticator::new(config, options)
            .map_err(|e| anyhow::anyhow!("DKIM resolver: {e}"))?;
        Ok(DkimVerifier {
            authenticator,
            hostname: hostname.to_string(),
        })
    }

    /// An `Authentication-Results` field (RFC 8601) with one `dkim=` result
    /// per signature, or `dkim=none` for an unsigned message.
    pub async fn authentication_results(&self, raw: &[u8]) -> String {
        let Some(message) = AuthenticatedMessage::parse(raw) else {
            return format!(
                "Authentication-Results: {};\r\n\tdkim=permerror (unparsable message)\r\n",
                self.hostname
            );
        };
        let outputs = self.authenticator.verify_dkim(&message).await;
        if outputs.is_empty() {
            return format!(
                "Authentication-Results: {};\r\n\tdkim=none\r\n",
                self.hostname
            );
        }
        let from_domain = super::first_from(&HeaderBlock::parse(raw))
            .map(|a| a.domain().to_string())
            .unwrap_or_default();
        AuthenticationResults::new(&self.hostname)
            .with_dkim_results(&outputs, &from_domain)
            .to_header()
    }
}
