//! Every reply text a client can see, in one place. Where SES has words for a
//! situation (SES-PARITY.md) they are used verbatim, plus an enhanced code.

use super::Reply;

pub fn greeting(hostname: &str) -> Reply {
    Reply::plain(220, format!("{hostname} ESMTP sesame"))
}

pub fn ok() -> Reply {
    Reply::new(250, "2.0.0", "Ok")
}

pub fn helo(hostname: &str) -> Reply {
    Reply::plain(250, hostname.to_string())
}

pub fn sender_ok() -> Reply {
    Reply::new(250, "2.1.0", "Ok")
}

pub fn recipient_ok() -> Reply {
    Reply::new(250, "2.1.5", "Ok")
}

pub fn start_data() -> Reply {
    Reply::plain(354, "End data with <CR><LF>.<CR><LF>")
}

pub fn accepted(message_id: &str) -> Reply {
    Reply::new(250, "2.0.0", format!("Ok {message_id}"))
}

pub fn bye() -> Reply {
    Reply::new(221, "2.0.0", "Bye")
}

pub fn ready_for_tls() -> Reply {
    Reply::new(220, "2.0.0", "Ready to start TLS")
}

pub fn vrfy() -> Reply {
    Reply::new(
        252,
        "2.5.2",
        "Cannot VRFY user, but will accept message and attempt delivery",
    )
}

pub fn starttls_first() -> Reply {
    Reply::new(530, "5.7.0", "Must issue a STARTTLS command first")
}

pub fn auth_required() -> Reply {
    Reply::new(530, "5.7.0", "Authentication required")
}

pub fn auth_ok() -> Reply {
    Reply::new(235, "2.7.0", "Authentication successful.")
}

pub fn auth_invalid() -> Reply {
    Reply::new(535, "5.7.8", "Authentication Credentials Invalid")
}

pub fn auth_throttled() -> Reply {
    Reply::new(
        421,
        "4.7.0",
        "Too many authentication failures, try again later",
    )
}

pub fn auth_not_here() -> Reply {
    Reply::new(503, "5.5.1", "AUTH is not available on this port")
}

pub fn auth_already() -> Reply {
    Reply::new(503, "5.5.1", "Already authenticated")
}

pub fn auth_mechanism() -> Reply {
    Reply::new(504, "5.5.4", "Unrecognized authentication type")
}

pub fn auth_cancelled() -> Reply {
    Reply::new(501, "5.0.0", "Authentication cancelled")
}

pub fn auth_bad_base64() -> Reply {
    Reply::new(501, "5.5.2", "Invalid base64 data")
}

/// SASL challenge; `prompt` is already base64.
pub fn auth_challenge(prompt: &str) -> Reply {
    Reply::plain(334, prompt.to_string())
}

pub fn not_verified(region: &str, identities: &[String]) -> Reply {
    Reply::new(
        554,
        "5.7.1",
        format!(
            "Message rejected: Email address is not verified. The following identities failed the check in region {}: {}",
            region.to_ascii_uppercase(),
            identities.join(", ")
        ),
    )
}

pub fn mail_from_not_verified() -> Reply {
    Reply::new(
        554,
        "5.7.1",
        "MAIL FROM domain not verified: DNS setup for MAIL FROM domain is invalid.",
    )
}

pub fn too_many_recipients(limit: usize) -> Reply {
    Reply::new(
        554,
        "5.5.3",
        format!("Transaction failed: Recipient count exceeds {limit}."),
    )
}

pub fn duplicate_header(name: &str) -> Reply {
    Reply::new(
        554,
        "5.6.0",
        format!("Transaction failed: Duplicate header '{name}'."),
    )
}

pub fn missing_from() -> Reply {
    Reply::new(
        554,
        "5.6.0",
        "Transaction failed: Missing required header 'From'.",
    )
}

/// SES's wording for an `X-SES-CONFIGURATION-SET` the account lacks
/// (its API error ConfigurationSetDoesNotExist says the same).
pub fn unknown_configuration_set(name: &str) -> Reply {
    let shown: String = name
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(64)
        .collect();
    Reply::new(
        554,
        "5.3.0",
        format!("Configuration set <{shown}> does not exist."),
    )
}

pub fn sending_rate_exceeded() -> Reply {
    Reply::new(
        454,
        "4.7.0",
        "Throttling failure: Maximum sending rate exceeded",
    )
}

pub fn daily_quota_exceeded() -> Reply {
    Reply::new(
        454,
        "4.7.0",
        "Throttling failure: Daily message quota exceeded",
    )
}

pub fn too_long() -> Reply {
    Reply::new(552, "5.3.4", "Message is too long.")
}

pub fn bare_newline() -> Reply {
    Reply::new(
        554,
        "5.6.0",
        "Transaction failed: Message contains a bare CR or LF; lines must end with CRLF.",
    )
}

pub fn data_line_too_long(limit: usize) -> Reply {
    Reply::new(
        554,
        "5.6.0",
        format!("Transaction failed: Line longer than {limit} characters."),
    )
}

pub fn command_line_too_long() -> Reply {
    Reply::new(500, "5.5.2", "Line too long")
}

pub fn bad_sender(addr: &str) -> Reply {
    Reply::new(553, "5.1.7", format!("<{addr}> Invalid email address"))
}

pub fn bad_recipient(addr: &str) -> Reply {
    Reply::new(553, "5.1.3", format!("<{addr}> address unknown"))
}

pub fn relaying_denied() -> Reply {
    Reply::new(550, "5.7.1", "Relaying denied")
}

pub fn unknown_command() -> Reply {
    Reply::new(500, "5.5.1", "Unrecognized command")
}

pub fn not_implemented() -> Reply {
    Reply::new(502, "5.5.1", "Command not implemented")
}

pub fn syntax(usage: &str) -> Reply {
    Reply::new(501, "5.5.4", format!("Syntax: {usage}"))
}

pub fn bad_sequence(text: &str) -> Reply {
    Reply::new(503, "5.5.1", text.to_string())
}

pub fn tls_already() -> Reply {
    Reply::new(503, "5.5.1", "TLS already active")
}

pub fn http_refused() -> Reply {
    Reply::new(554, "5.7.0", "HTTP is not spoken here")
}

pub fn timeout() -> Reply {
    Reply::new(451, "4.4.2", "Timeout waiting for data from client")
}

pub fn too_many_errors() -> Reply {
    Reply::new(421, "4.7.0", "Too many errors, closing connection")
}

pub fn too_many_connections() -> Reply {
    Reply::new(421, "4.7.0", "Too many concurrent SMTP connections")
}

pub fn temporary_failure() -> Reply {
    Reply::new(451, "4.3.0", "Temporary service failure")
}

pub fn shutting_down() -> Reply {
    Reply::new(421, "4.3.2", "Service shutting down")
}

/// Attachment scanning found malware and the tenant rejects such mail.
pub fn virus_detected(signatures: &str) -> Reply {
    Reply::new(
        554,
        "5.7.1",
        format!("Message rejected: virus detected ({signatures})"),
    )
}

/// clamd down or slow under `on_scanner_error = "tempfail"` (and oversize
/// parts under `oversize = "tempfail"`): the client keeps the message.
pub fn scan_temporary_failure() -> Reply {
    Reply::new(451, "4.7.0", "Temporary service failure")
}

pub fn could_not_scan() -> Reply {
    Reply::new(
        554,
        "5.7.1",
        "Message rejected: attachments could not be scanned for viruses",
    )
}

pub fn too_large_to_scan(name: &str, size: usize) -> Reply {
    Reply::new(
        552,
        "5.3.4",
        format!(
            "Message rejected: attachment \"{name}\" is too large to scan for viruses ({size} bytes)"
        ),
    )
}

/// No receipt rule of the recipient domain's tenant covers the address
/// (SES's reply).
pub fn mailbox_does_not_exist() -> Reply {
    Reply::new(550, "5.1.1", "Mailbox does not exist")
}

/// The tenant's IP address filters block the client.
pub fn ip_filtered() -> Reply {
    Reply::new(
        550,
        "5.7.1",
        "Message rejected: the sending IP address is blocked by the recipient's IP address filter",
    )
}

/// The message fails DMARC and the author domain publishes `p=reject`.
pub fn dmarc_reject(domain: &str) -> Reply {
    Reply::new(
        550,
        "5.7.1",
        format!(
            "Message rejected: email from {domain} failed DMARC and the domain's policy is reject"
        ),
    )
}

/// A receipt rule's bounce action: the operator's code, status and text
/// (validated when the rule was added). The status is written into the
/// text because enhanced codes here are fixed strings.
pub fn rule_bounce(code: u16, status: &str, message: &str) -> Reply {
    Reply::plain(code, format!("{status} {message}"))
}
