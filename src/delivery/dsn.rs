//! Delivery status notifications (RFC 3464 `multipart/report`), sent once
//! to the original sender when recipients bounce. A DSN has the null
//! envelope sender (`MAIL FROM:<>`), so a DSN that bounces never causes
//! another one.

use crate::proto::headers::HeaderBlock;
use crate::types::unix_now;

/// One failed recipient.
pub struct Failed<'a> {
    pub recipient: &'a str,
    /// Enhanced status code (`5.1.1`).
    pub status: &'a str,
    /// The remote reply or our reason, one line.
    pub diagnostic: &'a str,
}

pub struct Report<'a> {
    pub hostname: &'a str,
    /// sesame's id of the original message.
    pub message_id: &'a str,
    /// The id of this DSN (its Message-ID and queue id).
    pub dsn_id: &'a str,
    /// Who receives the DSN: the original sender.
    pub to: &'a str,
    pub arrival: i64,
    pub failed: Vec<Failed<'a>>,
    /// The original message; only its header block is quoted.
    pub original: &'a [u8],
}

fn date(unix: i64) -> String {
    mail_parser::DateTime::from_timestamp(unix).to_rfc822()
}

/// One header-safe line: no CR, LF or other control characters.
fn line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

pub fn build(report: &Report<'_>) -> Vec<u8> {
    let boundary = format!("dsn-{}", report.dsn_id);
    let now = unix_now();
    let mut out = String::new();
    out += &format!(
        "From: Mail Delivery System <MAILER-DAEMON@{}>\r\n",
        report.hostname
    );
    out += &format!("To: <{}>\r\n", line(report.to));
    out += "Subject: Delivery Status Notification (Failure)\r\n";
    out += &format!("Date: {}\r\n", date(now));
    out += &format!("Message-ID: <{}@{}>\r\n", report.dsn_id, report.hostname);
    out += "Auto-Submitted: auto-replied\r\n";
    out += "MIME-Version: 1.0\r\n";
    out += &format!(
        "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n\r\n"
    );
    out += &format!("--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n");
    out += &format!(
        "Your message {} could not be delivered to these recipients:\r\n\r\n",
        report.message_id
    );
    for f in &report.failed {
        out += &format!("  {}: {}\r\n", line(f.recipient), line(f.diagnostic));
    }
    out += &format!("\r\n--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n");
    out += &format!("Reporting-MTA: dns; {}\r\n", report.hostname);
    out += &format!("X-Sesame-Message-Id: {}\r\n", report.message_id);
    out += &format!("Arrival-Date: {}\r\n", date(report.arrival));
    for f in &report.failed {
        out += "\r\n";
        out += &format!("Final-Recipient: rfc822; {}\r\n", line(f.recipient));
        out += "Action: failed\r\n";
        out += &format!("Status: {}\r\n", line(f.status));
        out += &format!("Diagnostic-Code: smtp; {}\r\n", line(f.diagnostic));
        out += &format!("Last-Attempt-Date: {}\r\n", date(now));
    }
    out += &format!("\r\n--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n");
    let mut bytes = out.into_bytes();
    let headers = HeaderBlock::parse(report.original);
    let raw = headers.raw();
    bytes.extend_from_slice(raw);
    if !raw.ends_with(b"\r\n") {
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsn_is_a_multipart_report_naming_each_recipient() {
        let original = b"From: a@acme.test\r\nTo: x@y.test\r\nSubject: hi\r\n\r\nsecret body\r\n";
        let dsn = build(&Report {
            hostname: "mx.test",
            message_id: "orig-id",
            dsn_id: "dsn-id",
            to: "a@acme.test",
            arrival: 0,
            failed: vec![Failed {
                recipient: "x@y.test",
                status: "5.1.1",
                diagnostic: "550 5.1.1 no such user\r\ninjected: header",
            }],
            original,
        });
        let text = String::from_utf8(dsn.clone()).unwrap();
        assert!(text.contains("report-type=delivery-status"));
        assert!(text.contains("Final-Recipient: rfc822; x@y.test\r\n"));
        assert!(text.contains("Status: 5.1.1\r\n"));
        assert!(
            text.contains("Diagnostic-Code: smtp; 550 5.1.1 no such user  injected: header\r\n")
        );
        assert!(text.contains("Subject: hi\r\n"));
        assert!(!text.contains("secret body"), "only headers are quoted");
        let parsed = mail_parser::MessageParser::new().parse(&dsn).unwrap();
        assert_eq!(parsed.parts.len(), 4, "multipart + three parts");
        assert!(!text.replace("\r\n", "").contains('\n'), "no bare LF");
    }
}
