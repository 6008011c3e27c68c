//! The SES mailbox simulator. Its addresses never leave the machine, whatever
//! the tenant's transport, and answer what SES answers:
//!
//! | address | outcome |
//! |---|---|
//! | `success@` | Delivery |
//! | `bounce@` | Permanent bounce, `550 5.1.1` |
//! | `ooto@` | Delivery (plus an auto-reply to the sender) |
//! | `complaint@` | Delivery (plus a Complaint event) |
//! | `suppressionlist@` | Permanent bounce, OnAccountSuppressionList |
//!
//! As on SES, simulator results never add anything to a suppression list.
//! Unknown local parts at the simulator domain deliver, like `success@`.

use async_trait::async_trait;

use super::{Outcome, Outgoing, Transport};

pub const DOMAIN: &str = "simulator.amazonses.com";

/// What a simulator address does besides its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    Success,
    Bounce,
    OutOfOffice,
    Complaint,
    SuppressionList,
}

/// The simulator behaviour of `recipient`, or None for a real address.
/// `+label` variants behave like the base address, as on SES.
pub fn behaviour(recipient: &str) -> Option<Behaviour> {
    let (local, domain) = recipient.rsplit_once('@')?;
    if !domain.trim_end_matches('.').eq_ignore_ascii_case(DOMAIN) {
        return None;
    }
    let base = local
        .split('+')
        .next()
        .unwrap_or(local)
        .to_ascii_lowercase();
    Some(match base.as_str() {
        "bounce" => Behaviour::Bounce,
        "ooto" => Behaviour::OutOfOffice,
        "complaint" => Behaviour::Complaint,
        "suppressionlist" => Behaviour::SuppressionList,
        _ => Behaviour::Success,
    })
}

pub const SUPPRESSED_RESPONSE: &str =
    "550 5.1.1 Address is on the suppression list (OnAccountSuppressionList)";

pub struct Simulator;

#[async_trait]
impl Transport for Simulator {
    fn name(&self) -> &'static str {
        "simulator"
    }

    async fn deliver(&self, _message: &Outgoing, recipients: &[String]) -> Vec<Outcome> {
        recipients
            .iter()
            .map(|r| match behaviour(r).unwrap_or(Behaviour::Success) {
                Behaviour::Bounce => Outcome::permanent(
                    "5.1.1",
                    "550 5.1.1 user unknown (Amazon SES mailbox simulator)",
                ),
                Behaviour::SuppressionList => Outcome::permanent("5.1.1", SUPPRESSED_RESPONSE),
                _ => {
                    Outcome::delivered("250 2.6.0 Message received (Amazon SES mailbox simulator)")
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulator_addresses_are_recognised() {
        assert_eq!(
            behaviour("bounce@simulator.amazonses.com"),
            Some(Behaviour::Bounce)
        );
        assert_eq!(
            behaviour("Success+x@SIMULATOR.amazonses.com"),
            Some(Behaviour::Success)
        );
        assert_eq!(
            behaviour("suppressionlist@simulator.amazonses.com"),
            Some(Behaviour::SuppressionList)
        );
        assert_eq!(behaviour("bounce@example.com"), None);
    }

    #[tokio::test]
    async fn simulator_gives_ses_outcomes() {
        let msg = Outgoing {
            message_id: "m".into(),
            tenant: "t".into(),
            mail_from: "a@b".into(),
            body: Default::default(),
            options: Default::default(),
            meta: Default::default(),
            require_tls: false,
        };
        let rcpts: Vec<String> = ["success", "bounce", "ooto", "complaint", "suppressionlist"]
            .iter()
            .map(|l| format!("{l}@{DOMAIN}"))
            .collect();
        let out = Simulator.deliver(&msg, &rcpts).await;
        assert!(matches!(out[0], Outcome::Delivered { .. }));
        assert!(matches!(&out[1], Outcome::Permanent { status, .. } if status == "5.1.1"));
        assert!(matches!(out[2], Outcome::Delivered { .. }));
        assert!(matches!(out[3], Outcome::Delivered { .. }));
        assert!(matches!(out[4], Outcome::Permanent { .. }));
    }
}
