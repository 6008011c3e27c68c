//! The `ses` transport: hands a message to Amazon SES with SESv2
//! `SendEmail` (`Content.Raw`), so SES does the last hop.
//!
//! - The body is the queued message as the engine passes it (`X-SES-*`
//!   headers already stripped); the destinations are the batch's
//!   recipients; the configuration set and tags of those headers are
//!   passed on as SendEmail parameters.
//! - SES's MessageId is recorded in control.db next to sesame's id, which
//!   is how SES feedback (`aws::feedback`) finds its way back.
//! - SES answers once for the whole batch, so every recipient of a batch
//!   shares one outcome.
//!
//! Error classes (see `classify`): throttling, 5xx and network trouble are
//! transient (the queue retries); refusals about the message, the sender or
//! the account are permanent; everything else (credentials, IAM, unknown
//! codes) is transient, because the fix is on the operator's side and the
//! queue keeps the mail until `delivery.max_age_secs`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_sesv2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sesv2::operation::send_email::SendEmailError;
use aws_sdk_sesv2::primitives::Blob;
use aws_sdk_sesv2::types::{Destination, EmailContent, MessageTag, RawMessage};

use super::{Outcome, Outgoing, Transport};
use crate::control::Control;

pub struct Ses {
    client: aws_sdk_sesv2::Client,
    control: Arc<Control>,
}

/// How an SES error is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Transient,
    /// With the RFC 3463 status that the Bounce event and DSN carry.
    Permanent(&'static str),
}

/// Classifies by SES error code. Codes SES does not document for
/// SendEmail (5xx failures, IAM and credential errors) and failures with no
/// code at all (timeouts, connection trouble) are transient.
fn classify(code: Option<&str>) -> Class {
    match code.unwrap_or("") {
        "TooManyRequestsException"
        | "LimitExceededException"
        | "Throttling"
        | "ThrottlingException" => Class::Transient,
        // The message or its sender is refused: sending it again changes nothing.
        "MessageRejected" | "MailFromDomainNotVerifiedException" => Class::Permanent("5.7.1"),
        "AccountSuspendedException" | "SendingPausedException" => Class::Permanent("5.7.1"),
        // The configuration set named in X-SES-CONFIGURATION-SET does not exist.
        "NotFoundException" => Class::Permanent("5.3.5"),
        // SES cannot parse what we sent (a bad tag, too many recipients).
        "BadRequestException" => Class::Permanent("5.6.0"),
        _ => Class::Transient,
    }
}

impl Ses {
    /// `timeout` bounds one SendEmail call. SDK-level retries are off: the
    /// queue owns retries, with its own schedule and DeliveryDelay events.
    pub fn new(sdk: &SdkConfig, control: Arc<Control>, timeout: Duration) -> Ses {
        let config = aws_sdk_sesv2::config::Builder::from(sdk)
            .retry_config(RetryConfig::standard().with_max_attempts(1))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(timeout)
                    .operation_timeout(timeout)
                    .build(),
            )
            .build();
        Ses {
            client: aws_sdk_sesv2::Client::from_conf(config),
            control,
        }
    }

    async fn send(&self, message: &Outgoing, recipients: &[String]) -> Outcome {
        let raw = match RawMessage::builder()
            .data(Blob::new(message.body.as_slice()))
            .build()
        {
            Ok(raw) => raw,
            Err(e) => {
                return Outcome::transient(format!("451 4.3.0 cannot build SES request: {e}"));
            }
        };
        let mut tags = Vec::new();
        for (name, value) in &message.options.tags {
            match MessageTag::builder().name(name).value(value).build() {
                Ok(tag) => tags.push(tag),
                Err(e) => return Outcome::transient(format!("451 4.3.0 bad message tag: {e}")),
            }
        }
        let request = self
            .client
            .send_email()
            .destination(
                Destination::builder()
                    .set_to_addresses(Some(recipients.to_vec()))
                    .build(),
            )
            .content(EmailContent::builder().raw(raw).build())
            .set_configuration_set_name(message.options.configuration_set.clone())
            .set_email_tags((!tags.is_empty()).then_some(tags));
        match request.send().await {
            Ok(output) => {
                let ses_id = output.message_id().unwrap_or_default().to_string();
                if let Err(e) = self.control.record_ses_message(
                    &ses_id,
                    &message.tenant,
                    &message.message_id,
                    recipients,
                ) {
                    // Sent all the same: retrying would send it twice.
                    tracing::error!(message_id = %message.message_id, ses_message_id = %ses_id, error = %format!("{e:#}"), "SES message id not recorded; its feedback will not be matched");
                }
                tracing::info!(message_id = %message.message_id, ses_message_id = %ses_id, "sent through SES");
                Outcome::delivered(format!("250 Ok {ses_id}"))
            }
            Err(err) => outcome_of(&err),
        }
    }
}

fn outcome_of(err: &SdkError<SendEmailError>) -> Outcome {
    let (code, text) = match err {
        SdkError::ServiceError(e) => (
            e.err().code().map(str::to_string),
            format!(
                "{} (HTTP {})",
                e.err().message().unwrap_or_default(),
                e.raw().status().as_u16()
            ),
        ),
        other => (None, error_chain(other)),
    };
    let name = code.as_deref().unwrap_or("no error code");
    match classify(code.as_deref()) {
        Class::Transient => Outcome::transient(format!("451 4.4.2 SES {name}: {text}")),
        Class::Permanent(esc) => Outcome::permanent(esc, format!("554 {esc} SES {name}: {text}")),
    }
}

/// The error and its causes on one line (dispatch failures hide the
/// useful part, such as "connection refused", in the source chain).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[async_trait]
impl Transport for Ses {
    fn name(&self) -> &'static str {
        "ses"
    }

    async fn deliver(&self, message: &Outgoing, recipients: &[String]) -> Vec<Outcome> {
        let outcome = self.send(message, recipients).await;
        vec![outcome; recipients.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_and_server_errors_are_retried() {
        for code in ["TooManyRequestsException", "LimitExceededException"] {
            assert_eq!(classify(Some(code)), Class::Transient);
        }
        assert_eq!(classify(Some("InternalFailure")), Class::Transient);
        assert_eq!(classify(None), Class::Transient, "network trouble");
    }

    #[test]
    fn refusals_of_message_sender_or_account_bounce() {
        for code in [
            "MessageRejected",
            "MailFromDomainNotVerifiedException",
            "AccountSuspendedException",
            "SendingPausedException",
            "NotFoundException",
        ] {
            assert!(
                matches!(classify(Some(code)), Class::Permanent(_)),
                "{code}"
            );
        }
    }

    #[test]
    fn credential_and_permission_errors_wait_for_the_operator() {
        for code in ["AccessDeniedException", "UnrecognizedClientException"] {
            assert_eq!(classify(Some(code)), Class::Transient, "{code}");
        }
    }
}
