//! Policy checks run after the final dot, before anything is queued.

pub mod config_set;
pub mod inbound;
pub mod quota;

use mail_parser::MessageParser;

use crate::control::{Control, Identity, Tenant};
use crate::proto::headers::HeaderBlock;
use crate::proto::{Reply, texts};
use crate::types::EmailAddress;

/// The SES mailbox simulator's domain: always a valid sandbox recipient.
pub const SIMULATOR_DOMAIN: &str = "simulator.amazonses.com";

/// Header checks every message gets, from any listener.
pub fn header_checks(headers: &HeaderBlock<'_>) -> Result<(), Reply> {
    match headers.duplicated_singleton() {
        Some(name) => Err(texts::duplicate_header(name)),
        None => Ok(()),
    }
}

/// Sender authorization for submitted mail (SES semantics): the envelope
/// sender and the From/Sender header addresses must be verified identities
/// of the tenant, and a sandboxed tenant may only send to verified
/// identities or the simulator. Every failing identity is listed in one
/// reply, as SES does.
pub fn authorize_submission(
    control: &Control,
    region: &str,
    tenant: &Tenant,
    mail_from: &str,
    recipients: &[String],
    headers: &HeaderBlock<'_>,
) -> Result<(), Reply> {
    let verified = control
        .verified_identities(&tenant.name)
        .map_err(|_| texts::temporary_failure())?;

    let parsed = MessageParser::new().parse_headers(headers.raw());
    let header_addresses = |field: Option<&mail_parser::Address<'_>>| -> Vec<String> {
        field
            .map(|a| {
                a.iter()
                    .filter_map(|addr| addr.address.as_deref().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let from = header_addresses(parsed.as_ref().and_then(|m| m.from()));
    if from.is_empty() {
        return Err(texts::missing_from());
    }
    let sender = header_addresses(parsed.as_ref().and_then(|m| m.sender()));

    let mut failed: Vec<String> = Vec::new();
    let mut check = |addr: &str| {
        if !is_covered(&verified, addr) && !failed.iter().any(|f| f == addr) {
            failed.push(addr.to_string());
        }
    };
    check(mail_from);
    from.iter().chain(&sender).for_each(|a| check(a));
    if tenant.sandbox {
        for rcpt in recipients {
            let simulator =
                EmailAddress::parse(rcpt).is_some_and(|a| a.domain() == SIMULATOR_DOMAIN);
            if !simulator {
                check(rcpt);
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(texts::not_verified(region, &failed))
    }
}

/// The first address of the From header.
pub fn first_from(headers: &HeaderBlock<'_>) -> Option<EmailAddress> {
    let parsed = MessageParser::new().parse_headers(headers.raw())?;
    parsed
        .from()?
        .iter()
        .find_map(|a| a.address.as_deref().and_then(EmailAddress::parse))
}

fn is_covered(verified: &[Identity], addr: &str) -> bool {
    EmailAddress::parse(addr).is_some_and(|a| verified.iter().any(|id| id.covers(&a)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::IdentityStatus;

    fn setup() -> (tempfile::TempDir, Control) {
        let dir = tempfile::tempdir().unwrap();
        let control = Control::open(dir.path()).unwrap();
        control.create_tenant("t").unwrap();
        control
            .add_identity("t", "ok.test", IdentityStatus::Success)
            .unwrap();
        control
            .add_identity("t", "pending.test", IdentityStatus::Pending)
            .unwrap();
        control
            .add_identity("t", "friend@else.test", IdentityStatus::Success)
            .unwrap();
        (dir, control)
    }

    fn check(control: &Control, from: &str, header_from: &str, rcpt: &str) -> Result<(), Reply> {
        let body = format!("From: {header_from}\r\nSubject: x\r\n\r\nhi\r\n");
        let headers = HeaderBlock::parse(body.as_bytes());
        authorize_submission(
            control,
            "eu-west-1",
            &control.require_tenant("t").unwrap(),
            from,
            &[rcpt.to_string()],
            &headers,
        )
    }

    #[test]
    fn verified_sender_to_verified_recipient_passes_the_sandbox() {
        let (_d, c) = setup();
        assert_eq!(
            check(&c, "app@ok.test", "App <app@ok.test>", "friend@else.test"),
            Ok(())
        );
        assert_eq!(
            check(
                &c,
                "app@ok.test",
                "app@ok.test",
                "success@simulator.amazonses.com"
            ),
            Ok(())
        );
    }

    #[test]
    fn every_unverified_identity_is_listed_once() {
        let (_d, c) = setup();
        let reply =
            check(&c, "a@pending.test", "b@nowhere.test", "stranger@else.test").unwrap_err();
        assert_eq!(reply.code, 554);
        assert_eq!(
            reply.text(),
            "Message rejected: Email address is not verified. The following identities failed the check in region EU-WEST-1: a@pending.test, b@nowhere.test, stranger@else.test"
        );
    }

    #[test]
    fn production_tenants_may_send_anywhere() {
        let (_d, c) = setup();
        c.set_sandbox("t", false).unwrap();
        assert_eq!(
            check(&c, "app@ok.test", "app@ok.test", "stranger@else.test"),
            Ok(())
        );
    }

    #[test]
    fn a_message_without_from_is_refused() {
        let (_d, c) = setup();
        let headers = HeaderBlock::parse(b"Subject: x\r\n\r\nhi\r\n");
        let tenant = c.require_tenant("t").unwrap();
        let reply = authorize_submission(&c, "us-east-1", &tenant, "app@ok.test", &[], &headers)
            .unwrap_err();
        assert_eq!(reply, texts::missing_from());
    }
}
