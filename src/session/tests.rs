//! In-memory tests of the session state machine: bytes in, replies out.

use super::machine::{Action, Machine, Policy, Transaction};
use crate::auth::AuthOutcome;
use crate::config::{Limits, ListenerKind};
use crate::proto::texts;

/// Drives a machine with canned answers: password "good" authenticates,
/// recipients at "ok.test" are accepted, every message is accepted.
struct Harness {
    machine: Machine,
    out: String,
    messages: Vec<Transaction>,
    tls_requests: usize,
    refused: usize,
    closed: bool,
}

impl Harness {
    fn new(kind: ListenerKind, tls: bool) -> Self {
        let limits = Limits {
            max_message_size: 1000,
            max_recipients: 3,
            max_errors: 5,
            ..Limits::default()
        };
        Harness {
            machine: Machine::new(Policy::new(kind, "mx.test", &limits), tls),
            out: String::new(),
            messages: Vec::new(),
            tls_requests: 0,
            refused: 0,
            closed: false,
        }
    }

    fn submission_after_auth() -> Self {
        let mut h = Harness::new(ListenerKind::Submission, true);
        h.send("EHLO c\r\nAUTH PLAIN AHVzZXIAZ29vZA==\r\n");
        h.out.clear();
        h
    }

    /// Feeds input and runs the machine until it needs more; returns the
    /// replies written for this input.
    fn send(&mut self, input: &str) -> String {
        self.send_bytes(input.as_bytes())
    }

    fn send_bytes(&mut self, input: &[u8]) -> String {
        let before = self.out.len();
        self.machine.push_input(input);
        while let Some(action) = self.machine.next_action() {
            match action {
                Action::Send(reply) => {
                    let mut bytes = Vec::new();
                    reply.write_to(&mut bytes);
                    self.out.push_str(&String::from_utf8(bytes).unwrap());
                }
                Action::Authenticate { username, password } => {
                    let outcome = if password == "good" {
                        AuthOutcome::Success { tenant: "t".into() }
                    } else {
                        AuthOutcome::Invalid {
                            delay: Default::default(),
                        }
                    };
                    self.machine.auth_result(outcome, username);
                }
                Action::Recipient(rcpt) => {
                    let verdict = if rcpt.ends_with("@ok.test") {
                        Ok(())
                    } else {
                        Err(texts::relaying_denied())
                    };
                    self.machine.recipient_result(verdict);
                }
                Action::Message(tx) => {
                    self.messages.push(tx);
                    self.machine.message_result(texts::accepted("id-1"));
                }
                Action::StartTls => {
                    self.tls_requests += 1;
                    self.machine.tls_started();
                }
                Action::Close => self.closed = true,
                Action::Refused(_) => self.refused += 1,
            }
        }
        self.out[before..].to_string()
    }
}

fn codes(replies: &str) -> Vec<&str> {
    replies
        .lines()
        .filter(|l| l.as_bytes().get(3) == Some(&b' '))
        .map(|l| &l[..3])
        .collect()
}

#[test]
fn submission_refuses_auth_and_mail_before_starttls() {
    let mut h = Harness::new(ListenerKind::Submission, false);
    let ehlo = h.send("EHLO c\r\n");
    assert!(ehlo.ends_with("250 STARTTLS\r\n"), "{ehlo}");
    assert!(!ehlo.contains("AUTH"));
    for cmd in [
        "AUTH PLAIN AHUAZ29vZA==\r\n",
        "MAIL FROM:<a@ok.test>\r\n",
        "VRFY x\r\n",
    ] {
        assert_eq!(
            h.send(cmd),
            "530 5.7.0 Must issue a STARTTLS command first\r\n"
        );
    }
    assert_eq!(h.send("NOOP\r\n"), "250 2.0.0 Ok\r\n");
}

#[test]
fn submission_needs_auth_for_mail_after_tls() {
    let mut h = Harness::new(ListenerKind::Submission, true);
    let ehlo = h.send("EHLO c\r\n");
    assert!(ehlo.contains("AUTH PLAIN LOGIN"));
    assert!(!ehlo.contains("STARTTLS"));
    assert_eq!(
        h.send("MAIL FROM:<a@ok.test>\r\n"),
        "530 5.7.0 Authentication required\r\n"
    );
}

#[test]
fn auth_plain_and_login_with_and_without_initial_response() {
    let mut h = Harness::new(ListenerKind::Submission, true);
    h.send("EHLO c\r\n");
    assert_eq!(h.send("AUTH PLAIN\r\n"), "334 \r\n");
    assert_eq!(
        h.send("AHVzZXIAYmFk\r\n"),
        "535 5.7.8 Authentication Credentials Invalid\r\n"
    );
    assert_eq!(h.send("AUTH LOGIN\r\n"), "334 VXNlcm5hbWU6\r\n");
    assert_eq!(h.send("dXNlcg==\r\n"), "334 UGFzc3dvcmQ6\r\n");
    assert_eq!(
        h.send("Z29vZA==\r\n"),
        "235 2.7.0 Authentication successful.\r\n"
    );
    assert_eq!(h.machine.tenant(), Some("t"));
    assert_eq!(
        h.send("AUTH LOGIN dXNlcg==\r\n"),
        "503 5.5.1 Already authenticated\r\n"
    );
}

#[test]
fn auth_can_be_cancelled_and_rejects_bad_base64() {
    let mut h = Harness::new(ListenerKind::Submission, true);
    h.send("EHLO c\r\n");
    h.send("AUTH LOGIN\r\n");
    assert_eq!(h.send("*\r\n"), "501 5.0.0 Authentication cancelled\r\n");
    assert_eq!(
        h.send("AUTH PLAIN !!!\r\n"),
        "501 5.5.2 Invalid base64 data\r\n"
    );
}

#[test]
fn starttls_discards_pipelined_plaintext() {
    let mut h = Harness::new(ListenerKind::Mx, false);
    h.send("EHLO c\r\n");
    let replies = h.send("STARTTLS\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<a@ok.test>\r\n");
    assert_eq!(replies, "220 2.0.0 Ready to start TLS\r\n");
    assert_eq!(h.tls_requests, 1);
    // After TLS the session starts over: no sender was remembered.
    assert_eq!(
        h.send("RCPT TO:<a@ok.test>\r\n"),
        "503 5.5.1 Need MAIL before RCPT\r\n"
    );
}

#[test]
fn mx_accepts_tenant_domains_and_denies_relaying() {
    let mut h = Harness::new(ListenerKind::Mx, false);
    h.send("EHLO c\r\n");
    assert_eq!(
        h.send("AUTH PLAIN AHUAZ29vZA==\r\n"),
        "503 5.5.1 AUTH is not available on this port\r\n"
    );
    assert_eq!(h.send("MAIL FROM:<>\r\n"), "250 2.1.0 Ok\r\n");
    assert_eq!(
        h.send("RCPT TO:<x@elsewhere.test>\r\n"),
        "550 5.7.1 Relaying denied\r\n"
    );
    assert_eq!(h.send("RCPT TO:<x@ok.test>\r\n"), "250 2.1.5 Ok\r\n");
    assert_eq!(
        h.send("DATA\r\n"),
        "354 End data with <CR><LF>.<CR><LF>\r\n"
    );
    assert_eq!(
        h.send("Subject: hi\r\n\r\n..dot\r\n.\r\n"),
        "250 2.0.0 Ok id-1\r\n"
    );
    assert_eq!(h.messages.len(), 1);
    assert_eq!(h.messages[0].mail_from, "");
    assert_eq!(h.messages[0].recipients, ["x@ok.test"]);
    assert_eq!(h.messages[0].body, b"Subject: hi\r\n\r\n.dot\r\n");
}

#[test]
fn pipelined_transaction_gets_every_reply_in_order() {
    let mut h = Harness::submission_after_auth();
    let replies = h.send(
        "MAIL FROM:<a@ok.test>\r\nRCPT TO:<b@ok.test>\r\nRCPT TO:<c@ok.test>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n",
    );
    assert_eq!(codes(&replies), ["250", "250", "250", "354", "250", "221"]);
    assert!(h.closed);
}

#[test]
fn more_recipients_than_the_limit_are_refused_at_data() {
    let mut h = Harness::submission_after_auth();
    h.send("MAIL FROM:<a@ok.test>\r\n");
    for i in 0..4 {
        assert_eq!(
            h.send(&format!("RCPT TO:<r{i}@ok.test>\r\n")),
            "250 2.1.5 Ok\r\n"
        );
    }
    assert_eq!(
        h.send("DATA\r\n"),
        "554 5.5.3 Transaction failed: Recipient count exceeds 3.\r\n"
    );
    // The transaction is over; a new one may start.
    assert_eq!(h.send("MAIL FROM:<a@ok.test>\r\n"), "250 2.1.0 Ok\r\n");
}

#[test]
fn declared_and_streamed_oversize_are_refused() {
    let mut h = Harness::submission_after_auth();
    assert_eq!(
        h.send("MAIL FROM:<a@ok.test> SIZE=5000\r\n"),
        "552 5.3.4 Message is too long.\r\n"
    );
    h.send("MAIL FROM:<a@ok.test>\r\nRCPT TO:<b@ok.test>\r\nDATA\r\n");
    let mut replies = String::new();
    for _ in 0..30 {
        replies += &h.send(&format!("{}\r\n", "x".repeat(98)));
    }
    assert_eq!(replies, "", "no reply before the end of DATA");
    assert_eq!(h.send(".\r\n"), "552 5.3.4 Message is too long.\r\n");
    assert!(h.messages.is_empty());
    assert_eq!(h.refused, 1);
}

#[test]
fn smuggled_end_of_data_is_swallowed_with_the_refused_message() {
    for smuggle in ["\n.\n", "\n.\r\n", "\r.\r\n", "\r\n.\n", "\r\n.\r"] {
        let mut h = Harness::submission_after_auth();
        h.send("MAIL FROM:<a@ok.test>\r\nRCPT TO:<b@ok.test>\r\nDATA\r\n");
        let replies = h.send(&format!(
            "Subject: x\r\n\r\nhello{smuggle}MAIL FROM:<evil@ok.test>\r\nRCPT TO:<victim@ok.test>\r\nDATA\r\nsmuggled\r\n.\r\n"
        ));
        assert_eq!(
            replies,
            "554 5.6.0 Transaction failed: Message contains a bare CR or LF; lines must end with CRLF.\r\n",
            "variant {smuggle:?}"
        );
        assert!(
            h.messages.is_empty(),
            "variant {smuggle:?} produced a message"
        );
    }
}

#[test]
fn bad_addresses_get_ses_texts() {
    let mut h = Harness::submission_after_auth();
    assert_eq!(
        h.send("MAIL FROM:<nodomain>\r\n"),
        "553 5.1.7 <nodomain> Invalid email address\r\n"
    );
    assert_eq!(
        h.send("MAIL FROM:<>\r\n"),
        "553 5.1.7 <> Invalid email address\r\n"
    );
    h.send("MAIL FROM:<a@ok.test>\r\n");
    assert_eq!(
        h.send("RCPT TO:<nodomain>\r\n"),
        "553 5.1.3 <nodomain> address unknown\r\n"
    );
}

#[test]
fn too_many_errors_close_the_session() {
    let mut h = Harness::new(ListenerKind::Mx, false);
    let replies = h.send("BOGUS\r\nBOGUS\r\nBOGUS\r\nBOGUS\r\nBOGUS\r\nNOOP\r\n");
    assert!(
        replies.ends_with("421 4.7.0 Too many errors, closing connection\r\n"),
        "{replies}"
    );
    assert!(h.closed);
    assert!(!replies.contains("250"), "nothing is processed after 421");
}

#[test]
fn http_requests_close_the_connection() {
    let mut h = Harness::new(ListenerKind::Mx, false);
    let replies = h.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(replies, "554 5.7.0 HTTP is not spoken here\r\n");
    assert!(h.closed);
}

#[test]
fn overlong_command_lines_are_refused_without_buffering_them() {
    let mut h = Harness::new(ListenerKind::Mx, false);
    let line = "NOOP ".to_string() + &"x".repeat(20_000);
    assert_eq!(h.send(&line), "500 5.5.2 Line too long\r\n");
    // The tail of the long line is discarded, not parsed as a command.
    assert_eq!(h.send("yyy\r\nNOOP\r\n"), "250 2.0.0 Ok\r\n");
}

#[test]
fn vrfy_is_252_and_unimplemented_commands_are_502() {
    let mut h = Harness::new(ListenerKind::Mx, false);
    assert_eq!(
        h.send("VRFY a\r\n"),
        "252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery\r\n"
    );
    assert_eq!(
        h.send("EXPN list\r\n"),
        "502 5.5.1 Command not implemented\r\n"
    );
}
