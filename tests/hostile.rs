//! Hostile clients: SMTP smuggling, STARTTLS command injection, HTTP
//! requests, overlong lines, error/timeout/connection limits.
//! Uses the raw client: swaks cannot send bare CR/LF or exact pipelining.

mod common;

use common::*;
use std::time::{Duration, Instant};

const BARE: &str =
    "554 5.6.0 Transaction failed: Message contains a bare CR or LF; lines must end with CRLF.";

fn start_with_acme(options: Options) -> Sesame {
    let s = Sesame::start(options);
    s.create_tenant("acme");
    s.add_identity("acme", "acme.test", true);
    s
}

/// After the one expected reply, QUIT must get 221 (or the server may have
/// closed); any other reply means the server answered something we never
/// sent as a command.
#[track_caller]
fn assert_no_more_replies(c: &mut Smtp) {
    if c.send_lossy(b"QUIT\r\n").is_err() {
        return;
    }
    match c.try_reply() {
        Ok(r) => assert_eq!(r.code, 221, "extra reply before QUIT's: {:?}", r.lines),
        Err(e) => {
            assert!(
                e.kind() == std::io::ErrorKind::UnexpectedEof
                    || e.kind() == std::io::ErrorKind::ConnectionReset,
                "{e}"
            );
        }
    }
}

/// SMTP smuggling: bare-LF/bare-CR "end of data" look-alikes never end DATA;
/// only CRLF.CRLF does, the whole thing gets exactly one reply (554 bare
/// CR/LF), and nothing from the smuggled transaction is queued.
#[test]
fn smuggling_variants_refused_as_one_message() {
    let s = start_with_acme(Options::new());
    let variants: [(&str, &[u8]); 6] = [
        ("LF.LF", b"\n.\n"),
        ("LF.CRLF", b"\n.\r\n"),
        ("CR.CRLF", b"\r.\r\n"),
        ("CRLF.LF", b"\r\n.\n"),
        ("CRLF.CR", b"\r\n.\r"),
        ("CR.CR", b"\r.\r"),
    ];
    for (name, dot) in variants {
        let mut c = Smtp::open(s.mx());
        c.ehlo();
        c.expect("MAIL FROM:<cover@external.example>", "250 2.1.0 Ok");
        c.expect("RCPT TO:<info@acme.test>", "250 2.1.5 Ok");
        c.expect("DATA", "354 End data with <CR><LF>.<CR><LF>");
        let mut payload = Vec::new();
        payload.extend_from_slice(b"From: cover@external.example\r\nSubject: cover\r\n\r\nhello");
        payload.extend_from_slice(dot);
        payload.extend_from_slice(
            b"MAIL FROM:<evil@attacker.example>\r\n\
              RCPT TO:<smuggled@acme.test>\r\n\
              DATA\r\n\
              From: ceo@acme.test\r\nSubject: SMUGGLED\r\n\r\nevil\r\n.\r\n",
        );
        c.send(&payload);
        let r = c.reply();
        assert_eq!(r.last(), BARE, "variant {name}: {:?}", r.lines);
        assert_no_more_replies(&mut c);
    }
    let q = s.queue();
    assert!(q.is_empty(), "smuggling queued something: {q:?}");
}

/// Commands pipelined after STARTTLS are discarded: they get no reply in
/// clear text, and after the handshake the first reply is to our own EHLO.
#[test]
fn starttls_injection_discarded() {
    let s = start_with_acme(Options::new());
    for listener in ["submission", "mx"] {
        let mut c = Smtp::open(s.addr(listener));
        c.ehlo();
        c.send(b"STARTTLS\r\nRSET\r\nMAIL FROM:<x@y.test>\r\n");
        let r = c.reply();
        assert_eq!(r.last(), "220 2.0.0 Ready to start TLS", "{listener}");
        assert!(
            c.pending().is_empty(),
            "{listener}: clear-text bytes after 220: {:?}",
            String::from_utf8_lossy(c.pending())
        );
        c.upgrade()
            .unwrap_or_else(|e| panic!("{listener}: handshake failed: {e}"));
        let r = c.cmd("EHLO client.test");
        assert_eq!(r.code, 250, "{listener}: {:?}", r.lines);
        assert!(
            r.lines.len() > 1 && r.texts()[0].starts_with(HOSTNAME),
            "{listener}: first reply after TLS is not the EHLO reply: {:?}",
            r.lines
        );
        if listener == "submission" {
            assert!(r.has_text("AUTH PLAIN LOGIN"), "{:?}", r.lines);
        }
        // Nothing from the injected MAIL survived: a new MAIL is not a
        // "nested MAIL" error on MX.
        if listener == "mx" {
            c.expect("MAIL FROM:<a@external.example>", "250 2.1.0 Ok");
        }
        assert_no_more_replies(&mut c);
    }
}

/// An HTTP request line as a command: 554 5.7.0 and the connection closes.
#[test]
fn http_verbs_close_connection() {
    let s = start_with_acme(Options::new());
    for req in [
        "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "POST /submit HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n",
        "CONNECT example.net:443 HTTP/1.1\r\n\r\n",
    ] {
        let mut c = Smtp::open(s.mx());
        c.send(req.as_bytes());
        let r = c.reply();
        assert_eq!(r.last(), "554 5.7.0 HTTP is not spoken here", "{req:?}");
        c.expect_closed();
    }
}

/// A command line over max_command_line gets one 5xx reply, and the tail of
/// the line is not executed as a command.
#[test]
fn command_line_too_long() {
    let s = start_with_acme(Options::new().limit("max_command_line", 4096));
    let mut c = Smtp::open(s.mx());
    c.ehlo();
    let mut line = format!("NOOP {}", "a".repeat(5000));
    line.push_str("\r\n");
    c.send(line.as_bytes());
    let r = c.reply();
    assert!(
        (500..600).contains(&r.code),
        "overlong command not refused: {:?}",
        r.lines
    );
    assert_no_more_replies(&mut c);
}

/// A DATA line over 1000 characters: 554 5.6.0 Line longer than 1000
/// characters; a 998-character line is fine.
#[test]
fn data_line_too_long() {
    let s = start_with_acme(Options::new());
    let mut c = Smtp::open(s.mx());
    c.ehlo();
    let long = format!("Subject: long\n\n{}\n", "z".repeat(1500));
    let r = c.send_mail("a@external.example", &["info@acme.test"], &long);
    assert_eq!(
        r.last(),
        "554 5.6.0 Transaction failed: Line longer than 1000 characters."
    );
    assert!(s.queue().is_empty());

    let ok = format!("Subject: ok\n\n{}\n", "z".repeat(998));
    let r = c.send_mail("a@external.example", &["info@acme.test"], &ok);
    let id = accepted_id(&r);
    assert!(s.queue_entry(&id).is_some());
}

/// More than max_errors bad commands: 421 4.7.0 Too many errors + close.
#[test]
fn too_many_errors() {
    let max = 3;
    let s = start_with_acme(Options::new().limit("max_errors", max));
    let mut c = Smtp::open(s.mx());
    let mut got_421_at = None;
    for i in 1..=max + 1 {
        let r = c.cmd("XYZZY");
        if r.code == 421 {
            assert_eq!(r.last(), "421 4.7.0 Too many errors, closing connection");
            got_421_at = Some(i);
            break;
        }
        assert!((500..600).contains(&r.code), "XYZZY #{i}: {:?}", r.lines);
    }
    let at = got_421_at.expect("no 421 after max_errors + 1 bad commands");
    assert!(at >= max, "421 after only {at} errors (max_errors = {max})");
    c.expect_closed();
}

/// Idle client: 451 4.4.2 Timeout waiting for data from client + close.
#[test]
fn idle_timeout() {
    let s = start_with_acme(Options::new().limit("command_timeout_secs", 1));
    let mut c = Smtp::open(s.mx());
    // Send nothing: the server's reply is the signal.
    let r = c.reply();
    assert_eq!(r.last(), "451 4.4.2 Timeout waiting for data from client");
    c.expect_closed();
}

/// Client stalls in the middle of DATA: same 451 + close, nothing queued.
#[test]
fn data_timeout() {
    let s = start_with_acme(Options::new().limit("data_timeout_secs", 1));
    let mut c = Smtp::open(s.mx());
    c.ehlo();
    c.expect("MAIL FROM:<a@external.example>", "250 2.1.0 Ok");
    c.expect("RCPT TO:<info@acme.test>", "250 2.1.5 Ok");
    c.expect("DATA", "354 End data with <CR><LF>.<CR><LF>");
    c.send(b"Subject: stalled\r\n\r\npartial line");
    let r = c.reply();
    assert_eq!(r.last(), "451 4.4.2 Timeout waiting for data from client");
    c.expect_closed();
    assert!(s.queue().is_empty());
}

/// More than max_connections_per_ip concurrent connections: 421 + close;
/// once one leaves, a new connection is served again.
#[test]
fn too_many_connections_per_ip() {
    let s = start_with_acme(Options::new().limit("max_connections_per_ip", 3));
    let mut held: Vec<Smtp> = (0..3).map(|_| Smtp::open(s.mx())).collect();
    let mut extra = Smtp::connect(s.mx());
    let r = extra.reply();
    assert_eq!(r.last(), "421 4.7.0 Too many concurrent SMTP connections");
    extra.expect_closed();

    let mut first = held.remove(0);
    assert_eq!(first.cmd("QUIT").code, 221);
    first.expect_closed();
    drop(first);
    // The slot is freed asynchronously after the close; retry until served.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut c = Smtp::connect(s.mx());
        let r = c.reply();
        if r.code == 220 {
            break;
        }
        assert_eq!(r.last(), "421 4.7.0 Too many concurrent SMTP connections");
        assert!(Instant::now() < deadline, "slot never freed");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// More than max_connections in total: 421 + close.
#[test]
fn too_many_connections_total() {
    let s = start_with_acme(Options::new().limit("max_connections", 2));
    let _held: Vec<Smtp> = (0..2).map(|_| Smtp::open(s.mx())).collect();
    let mut extra = Smtp::connect(s.mx());
    let r = extra.reply();
    assert_eq!(r.last(), "421 4.7.0 Too many concurrent SMTP connections");
    extra.expect_closed();
}
