//! MX listener: inbound mail for verified tenant domains without AUTH,
//! STARTTLS offered, and no open relay.

mod common;

use common::*;

const RELAY_DENIED: &str = "550 5.7.1 Relaying denied";

fn start_with_acme() -> Sesame {
    let s = Sesame::start(Options::new());
    // Sandbox tenant on purpose: inbound mail is not subject to the sandbox.
    s.create_tenant("acme");
    s.add_identity("acme", "acme.test", true);
    s.add_identity("acme", "pending.test", false);
    s
}

/// Greeting, EHLO on MX: STARTTLS offered, AUTH never offered.
#[test]
fn mx_greeting_and_capabilities() {
    let s = start_with_acme();
    let mut c = Smtp::open(s.mx());
    let r = c.ehlo();
    assert!(r.has_text("STARTTLS"), "{:?}", r.lines);
    assert!(r.has_text("PIPELINING"), "{:?}", r.lines);
    assert!(r.has_text("SIZE 40000000"), "{:?}", r.lines);
    assert!(
        !r.texts().iter().any(|t| t.starts_with("AUTH")),
        "AUTH on MX: {:?}",
        r.lines
    );
    c.starttls();
    let r = c.ehlo();
    assert!(!r.has_text("STARTTLS"), "{:?}", r.lines);
    assert!(
        !r.texts().iter().any(|t| t.starts_with("AUTH")),
        "AUTH on MX after TLS: {:?}",
        r.lines
    );
}

/// Plain MX delivery to a verified domain: accepted without AUTH and queued
/// for the owning tenant.
#[test]
fn mx_accepts_for_verified_domain_without_auth() {
    let s = start_with_acme();
    let out = swaks(&[
        "--server",
        &s.server_arg("mx"),
        "--from",
        "someone@external.example",
        "--to",
        "info@acme.test",
    ]);
    let id = out.expect_accepted();
    let e = s.queue_entry(&id).expect("queued");
    assert_eq!(e["tenant"], "acme", "{e}");
    assert_eq!(e["from"], "someone@external.example", "{e}");
    assert_eq!(str_list(&e, "recipients"), vec!["info@acme.test"], "{e}");
}

/// STARTTLS on MX works end to end (`swaks --tls`).
#[test]
fn mx_starttls_accepts() {
    let s = start_with_acme();
    let out = swaks(&[
        "--server",
        &s.server_arg("mx"),
        "--tls",
        "--from",
        "someone@external.example",
        "--to",
        "sales@acme.test",
    ]);
    assert!(out.out.contains("TLS started"), "{}", out.out);
    let id = out.expect_accepted();
    assert_eq!(s.queue_entry(&id).expect("queued")["tenant"], "acme");
}

/// Foreign domains and merely PENDING domains: 550 5.7.1 Relaying denied.
#[test]
fn mx_relay_denied() {
    let s = start_with_acme();
    for rcpt in ["victim@example.net", "user@pending.test"] {
        let out = swaks(&[
            "--server",
            &s.server_arg("mx"),
            "--from",
            "someone@external.example",
            "--to",
            rcpt,
        ]);
        out.assert_reply(RELAY_DENIED);
        assert_eq!(out.code(), 24, "no RCPT accepted for {rcpt}:\n{}", out.out);
    }
    let q = s.queue();
    assert!(q.is_empty(), "relay attempt queued: {q:?}");
}

/// Mixed recipients: the relay one is refused, the message is queued for the
/// local one only. Domain matching is case-insensitive.
#[test]
fn mx_mixed_recipients() {
    let s = start_with_acme();
    let mut c = Smtp::open(s.mx());
    c.ehlo();
    c.expect("MAIL FROM:<someone@external.example>", "250 2.1.0 Ok");
    c.expect("RCPT TO:<Info@ACME.Test>", "250 2.1.5 Ok");
    c.expect("RCPT TO:<victim@example.net>", RELAY_DENIED);
    c.expect("DATA", "354 End data with <CR><LF>.<CR><LF>");
    c.send(
        b"From: someone@external.example\r\nTo: Info@ACME.Test\r\nSubject: hi\r\n\r\nhi\r\n.\r\n",
    );
    let id = accepted_id(&c.reply());
    let e = s.queue_entry(&id).expect("queued");
    let rcpts = str_list(&e, "recipients");
    assert_eq!(rcpts.len(), 1, "{e}");
    assert!(rcpts[0].eq_ignore_ascii_case("info@acme.test"), "{e}");
    assert_eq!(e["tenant"], "acme");
}

/// VRFY on MX: 252 2.5.2.
#[test]
fn mx_vrfy_252() {
    let s = start_with_acme();
    let mut c = Smtp::open(s.mx());
    c.ehlo();
    c.expect(
        "VRFY info@acme.test",
        "252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery",
    );
}

/// Null reverse-path (bounces, RFC 5321 4.5.5) is accepted on MX.
#[test]
fn mx_accepts_null_sender() {
    let s = start_with_acme();
    let out = swaks(&[
        "--server",
        &s.server_arg("mx"),
        "--from",
        "<>",
        "--to",
        "bounces@acme.test",
    ]);
    let id = out.expect_accepted();
    let e = s.queue_entry(&id).expect("queued");
    assert_eq!(e["from"], "", "{e}");
    assert_eq!(str_list(&e, "recipients"), vec!["bounces@acme.test"]);
}
