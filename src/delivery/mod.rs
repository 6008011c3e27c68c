//! Delivery: turning queued mail into delivered (or bounced) mail.
//!
//! A [`Transport`] takes one message and a batch of its recipients (all in
//! one destination domain) and answers one [`Outcome`] per recipient. The
//! engine (`engine`) owns the schedule: it claims due recipients from
//! queue.db, picks a transport, records each outcome durably, and emits the
//! SES events, DSNs and suppression entries that follow from it.

pub mod capture;
pub mod dsn;
pub mod engine;
pub mod feedback;
pub mod local;
pub mod mx;
mod pool;
pub mod relay;
pub mod schedule;
pub mod ses;
pub mod simulator;
pub mod webhooks;

use async_trait::async_trait;

pub use engine::Engine;

/// What became of one recipient after one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The receiving side took responsibility (a 2xx after DATA, or a
    /// local store).
    Delivered { response: String },
    /// Worth retrying later: 4xx replies, connection trouble, DNS errors.
    Transient { response: String },
    /// Never worth retrying: 5xx replies, a domain that cannot receive.
    /// `status` is the RFC 3463 enhanced status code (`5.1.1`).
    Permanent { response: String, status: String },
}

impl Outcome {
    pub fn delivered(response: impl Into<String>) -> Outcome {
        Outcome::Delivered {
            response: response.into(),
        }
    }

    pub fn transient(response: impl Into<String>) -> Outcome {
        Outcome::Transient {
            response: response.into(),
        }
    }

    pub fn permanent(status: &str, response: impl Into<String>) -> Outcome {
        Outcome::Permanent {
            response: response.into(),
            status: status.to_string(),
        }
    }

    pub fn response(&self) -> &str {
        match self {
            Outcome::Delivered { response }
            | Outcome::Transient { response }
            | Outcome::Permanent { response, .. } => response,
        }
    }
}

/// One queued message as a transport sees it.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub message_id: String,
    pub tenant: String,
    /// The envelope sender (VERP address for outbound mail; empty for DSNs).
    pub mail_from: String,
    /// The message exactly as queued (signed, stamped).
    pub body: std::sync::Arc<Vec<u8>>,
    /// The SES options of its stripped `X-SES-*` headers.
    pub options: crate::proto::send_options::SendOptions,
    /// The queue entry's metadata (`NewEntry::meta`).
    pub meta: std::sync::Arc<serde_json::Value>,
    /// Its configuration set says `TlsPolicy REQUIRE`: no plaintext hop.
    pub require_tls: bool,
}

/// A way out of the gateway. Implementations must answer exactly one
/// outcome per recipient, in order, and never panic on a peer's behaviour.
#[async_trait]
pub trait Transport: Send + Sync {
    /// `capture`, `mx`, ... (recorded on each recipient row).
    fn name(&self) -> &'static str;

    /// Delivers `message` to `recipients`, which all share one domain.
    async fn deliver(&self, message: &Outgoing, recipients: &[String]) -> Vec<Outcome>;
}

/// The domain part of an address, lower-cased (the unit of per-destination
/// concurrency and of MX routing).
pub fn recipient_domain(recipient: &str) -> String {
    recipient
        .rsplit_once('@')
        .map(|(_, d)| d.trim_end_matches('.').to_ascii_lowercase())
        .unwrap_or_default()
}

/// Reads an SMTP reply text (`550 5.1.1 no such user`) as an enhanced
/// status code, falling back to the class of the basic code.
pub fn enhanced_status(response: &str) -> String {
    let mut words = response.split_whitespace();
    let code = words.next().unwrap_or("");
    if let Some(esc) = words.next()
        && esc.split('.').count() == 3
        && esc
            .split('.')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
    {
        return esc.to_string();
    }
    match code.chars().next() {
        Some('4') => "4.0.0".into(),
        Some('2') => "2.0.0".into(),
        _ => "5.0.0".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enhanced_status_is_read_from_the_reply_or_its_class() {
        assert_eq!(enhanced_status("550 5.1.1 no such user"), "5.1.1");
        assert_eq!(enhanced_status("550 no such user"), "5.0.0");
        assert_eq!(enhanced_status("451 try later"), "4.0.0");
        assert_eq!(enhanced_status("452 4.2.2 mailbox full"), "4.2.2");
    }

    #[test]
    fn recipient_domains_are_lower_case() {
        assert_eq!(recipient_domain("A@Example.TEST"), "example.test");
        assert_eq!(recipient_domain("nobody"), "");
    }
}
