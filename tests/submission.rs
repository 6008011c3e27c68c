//! Submission (STARTTLS on `submission`, implicit TLS on `submissions`):
//! TLS, AUTH, SES identity checks, sandbox, limits and exact refusals,
//! driven mostly with real swaks.

mod common;

use common::*;

const ACME: &str = "acme.test";

fn start() -> Sesame {
    Sesame::start(Options::new())
}

/// swaks submission with a custom DATA (no Message-ID header).
fn submit_data(s: &Sesame, a: &Account, from: &str, to: &str, data: &str) -> Swaks {
    let mut args = submit_args(s, a, from, to);
    args.push("--data".into());
    args.push(data.into());
    swaks_owned(&args)
}

#[track_caller]
fn assert_queue_empty(s: &Sesame) {
    let q = s.queue();
    assert!(q.is_empty(), "queue should be empty, has {q:?}");
}

/// Greeting and EHLO capabilities before/after STARTTLS on `submission`.
#[test]
fn ehlo_capabilities_before_and_after_tls() {
    let s = start();
    let mut c = Smtp::open(s.submission());
    let r = c.ehlo();
    assert!(
        r.texts()[0].starts_with(HOSTNAME),
        "EHLO first line: {:?}",
        r.lines
    );
    for cap in [
        "8BITMIME",
        "PIPELINING",
        "SIZE 40000000",
        "ENHANCEDSTATUSCODES",
        "SMTPUTF8",
        "STARTTLS",
    ] {
        assert!(r.has_text(cap), "pre-TLS EHLO lacks {cap}: {:?}", r.lines);
    }
    assert!(
        !r.texts().iter().any(|t| t.starts_with("AUTH")),
        "AUTH advertised before TLS: {:?}",
        r.lines
    );
    c.starttls();
    let r = c.ehlo();
    assert!(
        r.has_text("AUTH PLAIN LOGIN"),
        "post-TLS EHLO: {:?}",
        r.lines
    );
    assert!(
        !r.has_text("STARTTLS"),
        "STARTTLS advertised inside TLS: {:?}",
        r.lines
    );
    assert_eq!(c.cmd("QUIT").code, 221);
}

/// STARTTLS + AUTH PLAIN: `250 2.0.0 Ok <ses-id>`, queued with tenant/from/
/// recipients; stored body gets `Message-ID: <id@hostname>` and `Received:`.
#[test]
fn starttls_auth_plain_accepts_and_queues() {
    let s = start();
    let a = s.account("acme", ACME, true);
    let out = submit_data(
        &s,
        &a,
        "app@acme.test",
        "bob@example.net",
        &simple_data("app@acme.test", "bob@example.net", "plain"),
    );
    out.assert_reply("235 2.7.0 Authentication successful.");
    let id = out.expect_accepted();

    let e = s
        .queue_entry(&id)
        .unwrap_or_else(|| panic!("{id} not in queue: {:?}", s.queue()));
    assert_eq!(e["tenant"], "acme", "{e}");
    assert_eq!(e["from"], "app@acme.test", "{e}");
    assert_eq!(str_list(&e, "recipients"), vec!["bob@example.net"], "{e}");

    let body = s.queued_body(&id);
    let want = format!("Message-ID: <{id}@{HOSTNAME}>");
    assert!(
        body.lines()
            .any(|l| l.trim_end().eq_ignore_ascii_case(&want)),
        "queued body lacks {want:?}:\n{body}"
    );
    assert!(
        body.lines().any(|l| l.starts_with("Received:")),
        "queued body lacks Received:\n{body}"
    );
    assert!(body.contains("Hello from the sesame tests."), "{body}");
}

/// STARTTLS + AUTH LOGIN works as well.
#[test]
fn starttls_auth_login_accepts() {
    let s = start();
    let a = s.account("acme", ACME, true);
    let out = swaks(&[
        "--server",
        &s.server_arg("submission"),
        "--tls",
        "--auth",
        "LOGIN",
        "--auth-user",
        &a.user,
        "--auth-password",
        &a.pass,
        "--from",
        "app@acme.test",
        "--to",
        "carol@example.net",
    ]);
    out.assert_reply("235 2.7.0 Authentication successful.");
    let id = out.expect_accepted();
    let e = s.queue_entry(&id).expect("queued");
    assert_eq!(str_list(&e, "recipients"), vec!["carol@example.net"]);
}

/// Implicit TLS on the `submissions` listener (`swaks --tlsc`).
#[test]
fn implicit_tls_submissions_accepts() {
    let s = start();
    let a = s.account("acme", ACME, true);
    let out = swaks(&[
        "--server",
        &s.server_arg("submissions"),
        "--tlsc",
        "--auth",
        "PLAIN",
        "--auth-user",
        &a.user,
        "--auth-password",
        &a.pass,
        "--from",
        "app@acme.test",
        "--to",
        "dave@example.net",
    ]);
    let id = out.expect_accepted();
    assert_eq!(s.queue_entry(&id).expect("queued")["tenant"], "acme");

    // Already TLS: AUTH offered, STARTTLS not.
    let mut c = Smtp::open_tls(s.submissions());
    let r = c.ehlo();
    assert!(r.has_text("AUTH PLAIN LOGIN"), "{:?}", r.lines);
    assert!(!r.has_text("STARTTLS"), "{:?}", r.lines);
}

/// On `submission`, AUTH/MAIL/RCPT/DATA/VRFY before STARTTLS get 530.
#[test]
fn commands_before_starttls_refused() {
    let s = start();
    let a = s.account("acme", ACME, true);
    let mut c = Smtp::open(s.submission());
    c.ehlo();
    let want = "530 5.7.0 Must issue a STARTTLS command first";
    // Even valid credentials are refused in clear text.
    assert_eq!(c.auth_plain(&a.user, &a.pass).last(), want);
    c.expect("MAIL FROM:<app@acme.test>", want);
    c.expect("RCPT TO:<bob@example.net>", want);
    c.expect("DATA", want);
    c.expect("VRFY bob", want);

    // swaks without --tls: MAIL is refused the same way.
    let out = swaks(&[
        "--server",
        &s.server_arg("submission"),
        "--from",
        "app@acme.test",
        "--to",
        "bob@example.net",
    ]);
    out.assert_reply(want);
    assert_eq!(out.code(), 23, "swaks: error in MAIL\n{}", out.out);
    assert_queue_empty(&s);
}

/// MAIL without AUTH after STARTTLS: 530 Authentication required.
#[test]
fn mail_without_auth_refused() {
    let s = start();
    s.account("acme", ACME, true);
    let out = swaks(&[
        "--server",
        &s.server_arg("submission"),
        "--tls",
        "--from",
        "app@acme.test",
        "--to",
        "bob@example.net",
    ]);
    out.assert_reply("530 5.7.0 Authentication required");
    assert_eq!(out.code(), 23, "swaks: error in MAIL\n{}", out.out);
    assert_queue_empty(&s);
}

/// Wrong password / unknown user: 535 5.7.8.
#[test]
fn bad_password_refused() {
    let s = start();
    let a = s.account("acme", ACME, true);
    for (user, pass) in [
        (a.user.as_str(), "wrong-password"),
        ("AKIANOSUCHUSER000000", a.pass.as_str()),
    ] {
        let out = swaks(&[
            "--server",
            &s.server_arg("submission"),
            "--tls",
            "--auth",
            "PLAIN",
            "--auth-user",
            user,
            "--auth-password",
            pass,
            "--from",
            "app@acme.test",
            "--to",
            "bob@example.net",
        ]);
        out.assert_reply("535 5.7.8 Authentication Credentials Invalid");
        assert_eq!(out.code(), 28, "swaks: error in AUTH\n{}", out.out);
    }
    assert_queue_empty(&s);
}

fn auth_attempt(s: &Sesame, user: &str, pass: &str, local: &str) -> Swaks {
    swaks(&[
        "--server",
        &s.server_arg("submission"),
        "--local-interface",
        local,
        "--tls",
        "--auth",
        "PLAIN",
        "--auth-user",
        user,
        "--auth-password",
        pass,
        "--from",
        "app@acme.test",
        "--to",
        "bob@example.net",
    ])
}

const THROTTLED: &str = "421 4.7.0 Too many authentication failures, try again later";

/// max_failures = 5: the first 4 bad passwords get a plain 535; the 5th
/// failure may be answered 535 or already 421 (SPEC: "421 after
/// max_failures"); from then on every attempt gets 421, even with the right
/// password; from another IP the same username is throttled too, while
/// another user from a fresh IP still authenticates.
#[test]
fn auth_failures_throttled() {
    let s = Sesame::start(Options::new().auth("max_failures", 5));
    let a = s.account("acme", ACME, true);
    let b = s.account("beta", "beta.test", true);
    for i in 1..=4 {
        let out = auth_attempt(&s, &a.user, "wrong", "127.0.0.1");
        assert!(
            out.has_reply("535 5.7.8 Authentication Credentials Invalid"),
            "attempt {i} should be a plain 535:\n{}",
            out.out
        );
        assert!(
            !out.has_reply(THROTTLED),
            "throttled too early (attempt {i}):\n{}",
            out.out
        );
    }
    let out = auth_attempt(&s, &a.user, "wrong", "127.0.0.1");
    assert!(
        out.has_reply("535 5.7.8 Authentication Credentials Invalid") != out.has_reply(THROTTLED),
        "5th failure must be answered 535 or 421 (exactly one):\n{}",
        out.out
    );
    let out = auth_attempt(&s, &a.user, "wrong", "127.0.0.1");
    out.assert_reply(THROTTLED);
    assert!(
        !out.has_reply("535 5.7.8 Authentication Credentials Invalid"),
        "{}",
        out.out
    );

    // Right password from the same IP: still throttled.
    let out = auth_attempt(&s, &a.user, &a.pass, "127.0.0.1");
    out.assert_reply(THROTTLED);
    assert!(out.accepted_id().is_none(), "{}", out.out);

    // Same username from another IP: throttled per username.
    let out = auth_attempt(&s, &a.user, &a.pass, "127.0.0.2");
    out.assert_reply(THROTTLED);
    assert!(out.accepted_id().is_none(), "{}", out.out);
    assert_queue_empty(&s);

    // Another user from a fresh IP is unaffected.
    let mut args = submit_args(&s, &b, "app@beta.test", "bob@example.net");
    args.extend(["--local-interface".into(), "127.0.0.3".into()]);
    swaks_owned(&args).expect_accepted();
}

/// From header not a verified identity: 554 naming it, after the dot.
#[test]
fn unverified_from_header_rejected() {
    let s = start();
    let a = s.account("acme", ACME, true);
    let out = submit_data(
        &s,
        &a,
        "app@acme.test",
        "bob@example.net",
        &simple_data("evil@other.test", "bob@example.net", "spoof"),
    );
    assert_eq!(
        rejected_identities(&out),
        vec!["evil@other.test".to_string()]
    );
    assert_eq!(out.code(), 26, "rejected after the dot\n{}", out.out);
    assert_queue_empty(&s);
}

/// Envelope sender not verified: 554 naming it; both unverified: both named.
#[test]
fn unverified_envelope_sender_rejected() {
    let s = start();
    let a = s.account("acme", ACME, true);
    let out = submit_data(
        &s,
        &a,
        "bounce@other.test",
        "bob@example.net",
        &simple_data("app@acme.test", "bob@example.net", "envelope"),
    );
    assert_eq!(
        rejected_identities(&out),
        vec!["bounce@other.test".to_string()]
    );
    assert_eq!(out.code(), 26, "rejected after the dot\n{}", out.out);

    let out = submit_data(
        &s,
        &a,
        "bounce@other.test",
        "bob@example.net",
        &simple_data("evil@third.test", "bob@example.net", "both"),
    );
    assert_eq!(
        rejected_identities(&out),
        vec![
            "bounce@other.test".to_string(),
            "evil@third.test".to_string()
        ]
    );
    assert_queue_empty(&s);
}

/// Sandbox tenant: unverified (and merely PENDING) recipients are refused
/// with 554 naming them; verified recipients and the simulator are accepted.
#[test]
fn sandbox_recipients() {
    let s = start();
    let a = s.account("acme", ACME, false);
    s.add_identity("acme", "pending@example.net", false);
    s.add_identity("acme", "ok@example.net", true);

    for rcpt in ["stranger@example.net", "pending@example.net"] {
        let out = submit_data(
            &s,
            &a,
            "app@acme.test",
            rcpt,
            &simple_data("app@acme.test", rcpt, "sandbox"),
        );
        assert_eq!(rejected_identities(&out), vec![rcpt.to_string()]);
    }
    assert_queue_empty(&s);

    for rcpt in ["ok@example.net", "success@simulator.amazonses.com"] {
        let out = submit_data(
            &s,
            &a,
            "app@acme.test",
            rcpt,
            &simple_data("app@acme.test", rcpt, "sandbox ok"),
        );
        let id = out.expect_accepted();
        assert_eq!(
            str_list(&s.queue_entry(&id).expect("queued"), "recipients"),
            vec![rcpt]
        );
    }
}

/// `tenant set --production` lifts the sandbox.
#[test]
fn production_lifts_sandbox() {
    let s = start();
    let a = s.account("acme", ACME, false);
    let data = simple_data("app@acme.test", "stranger@example.net", "p");
    let out = submit_data(&s, &a, "app@acme.test", "stranger@example.net", &data);
    assert!(
        out.accepted_id().is_none(),
        "sandbox accepted:\n{}",
        out.out
    );
    assert!(
        out.replies().iter().any(|r| r.starts_with("554 5.7.1 ")),
        "{}",
        out.out
    );
    s.set_production("acme");
    let out = submit_data(&s, &a, "app@acme.test", "stranger@example.net", &data);
    out.expect_accepted();
}

/// 50 recipients are fine; the 51st makes DATA fail with 554 5.5.3.
#[test]
fn recipient_limit_50() {
    let s = start();
    let a = s.account("acme", ACME, true);
    let rcpts = |n: usize| {
        (1..=n)
            .map(|i| format!("r{i}@example.net"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let out = swaks_owned(&submit_args(&s, &a, "app@acme.test", &rcpts(51)));
    out.assert_reply("554 5.5.3 Transaction failed: Recipient count exceeds 50.");
    assert_eq!(out.code(), 25, "refused at DATA:\n{}", out.out);
    assert_queue_empty(&s);

    let out = swaks_owned(&submit_args(&s, &a, "app@acme.test", &rcpts(50)));
    let id = out.expect_accepted();
    assert_eq!(
        str_list(&s.queue_entry(&id).unwrap(), "recipients").len(),
        50
    );
}

/// Duplicate Subject header: 554 5.6.0 after the dot.
#[test]
fn duplicate_subject_rejected() {
    let s = start();
    let a = s.account("acme", ACME, true);
    let data = "From: app@acme.test\nTo: bob@example.net\nSubject: one\nSubject: two\n\nbody\n";
    let out = submit_data(&s, &a, "app@acme.test", "bob@example.net", data);
    out.assert_reply("554 5.6.0 Transaction failed: Duplicate header 'Subject'.");
    assert_eq!(out.code(), 26, "{}", out.out);
    assert_queue_empty(&s);
}

/// Lowered max_message_size: EHLO advertises it, SIZE= at MAIL above it is
/// refused with 552, and a streamed message above it (swaks --attach) too.
#[test]
fn oversize_with_lowered_limit() {
    let s = Sesame::start(Options::new().limit("max_message_size", 20000));
    let a = s.account("acme", ACME, true);

    let mut c = Smtp::submission_session(s.submission(), &a.user, &a.pass);
    let r = c.ehlo();
    assert!(r.has_text("SIZE 20000"), "EHLO SIZE: {:?}", r.lines);
    c.expect(
        "MAIL FROM:<app@acme.test> SIZE=50000",
        "552 5.3.4 Message is too long.",
    );
    c.expect("MAIL FROM:<app@acme.test> SIZE=1000", "250 2.1.0 Ok");
    assert_eq!(c.cmd("QUIT").code, 221);

    let file = s.dir.path().join("big.bin");
    std::fs::write(&file, vec![b'x'; 40000]).unwrap();
    let mut args = submit_args(&s, &a, "app@acme.test", "bob@example.net");
    args.push("--attach".into());
    args.push(format!("@{}", file.display()));
    let out = swaks_owned(&args);
    out.assert_reply("552 5.3.4 Message is too long.");
    assert_queue_empty(&s);

    // Under the limit still goes through.
    std::fs::write(&file, vec![b'x'; 5000]).unwrap();
    let out = swaks_owned(&args);
    out.expect_accepted();
}

/// Default limit: a streamed DATA over 40,000,000 bytes gets 552.
#[test]
fn oversize_default_limit_streamed() {
    let s = start();
    let a = s.account("acme", ACME, true);
    let mut c = Smtp::submission_session(s.submission(), &a.user, &a.pass);
    c.expect("MAIL FROM:<app@acme.test>", "250 2.1.0 Ok");
    c.expect("RCPT TO:<bob@example.net>", "250 2.1.5 Ok");
    c.expect("DATA", "354 End data with <CR><LF>.<CR><LF>");
    c.send(b"From: app@acme.test\r\nTo: bob@example.net\r\nSubject: big\r\n\r\n");
    let line = [b'y'; 998];
    let mut chunk = Vec::with_capacity(1000 * 1000);
    for _ in 0..1000 {
        chunk.extend_from_slice(&line);
        chunk.extend_from_slice(b"\r\n");
    }
    // 41 MB of body; the server may stop reading early, so writes may fail.
    for _ in 0..41 {
        if c.send_lossy(&chunk).is_err() {
            break;
        }
    }
    let _ = c.send_lossy(b".\r\n");
    let r = c.reply();
    assert_eq!(r.last(), "552 5.3.4 Message is too long.");
    assert_queue_empty(&s);
}

/// Bad MAIL FROM address: 553 5.1.7; bad RCPT address: 553 5.1.3.
#[test]
fn bad_address_syntax_553() {
    let s = start();
    let a = s.account("acme", ACME, true);
    let mut c = Smtp::submission_session(s.submission(), &a.user, &a.pass);
    c.expect(
        "MAIL FROM:<no-at-sign>",
        "553 5.1.7 <no-at-sign> Invalid email address",
    );
    c.expect(
        "MAIL FROM:<two@@ats.test>",
        "553 5.1.7 <two@@ats.test> Invalid email address",
    );
    c.expect("MAIL FROM:<app@acme.test>", "250 2.1.0 Ok");
    c.expect(
        "RCPT TO:<two@@ats.test>",
        "553 5.1.3 <two@@ats.test> address unknown",
    );
    c.expect("RCPT TO:<bob@example.net>", "250 2.1.5 Ok");
}

/// VRFY: 252 2.5.2.
#[test]
fn vrfy_252() {
    let s = start();
    let a = s.account("acme", ACME, true);
    let mut c = Smtp::submission_session(s.submission(), &a.user, &a.pass);
    c.expect(
        "VRFY bob@example.net",
        "252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery",
    );
}

/// The README dev probe, verbatim, against an instance with `[dev]`.
#[test]
fn dev_probe_from_readme() {
    let s = Sesame::start(Options::new().dev());
    let port = s.submission().port();
    let out = swaks(&[
        "--server",
        &format!("127.0.0.1:{port}"),
        "--tls",
        "--auth-user",
        "dev",
        "--auth-password",
        "dev",
        "--from",
        "app@dev.sesame.test",
        "--to",
        "success@simulator.amazonses.com",
    ]);
    let id = out.expect_accepted();
    let e = s.queue_entry(&id).expect("dev message queued");
    assert_eq!(e["tenant"], "dev", "{e}");
    assert_eq!(e["from"], "app@dev.sesame.test", "{e}");
    assert_eq!(
        str_list(&e, "recipients"),
        vec!["success@simulator.amazonses.com"]
    );
}

/// A client-supplied Message-ID is replaced by sesame's own, as SES does
/// ("If you provide a Message-ID header, Amazon SES overrides the header
/// with its own value"); swaks' default message carries one.
#[test]
fn client_message_id_overridden() {
    let s = start();
    let a = s.account("acme", ACME, true);
    let out = swaks_owned(&submit_args(&s, &a, "app@acme.test", "bob@example.net"));
    let id = out.expect_accepted();
    let body = s.queued_body(&id);
    let ids: Vec<&str> = body
        .lines()
        .take_while(|l| !l.is_empty())
        .filter(|l| l.to_ascii_lowercase().starts_with("message-id:"))
        .collect();
    assert_eq!(
        ids,
        vec![format!("Message-ID: <{id}@{HOSTNAME}>").as_str()],
        "header section:\n{body}"
    );
}

/// Duplicate From header (another singleton): 554 5.6.0 naming it.
#[test]
fn duplicate_from_rejected() {
    let s = start();
    let a = s.account("acme", ACME, true);
    let data =
        "From: app@acme.test\nFrom: app@acme.test\nTo: bob@example.net\nSubject: x\n\nbody\n";
    let out = submit_data(&s, &a, "app@acme.test", "bob@example.net", data);
    out.assert_reply("554 5.6.0 Transaction failed: Duplicate header 'From'.");
    assert_queue_empty(&s);
}

/// PIPELINING (advertised) works with swaks --pipeline.
#[test]
fn pipelined_submission_accepted() {
    let s = start();
    let a = s.account("acme", ACME, true);
    let mut args = submit_args(&s, &a, "app@acme.test", "bob@example.net,carol@example.net");
    args.push("--pipeline".into());
    let out = swaks_owned(&args);
    let id = out.expect_accepted();
    let mut r = str_list(&s.queue_entry(&id).expect("queued"), "recipients");
    r.sort();
    assert_eq!(r, vec!["bob@example.net", "carol@example.net"]);
}

/// Several messages in one authenticated session each get their own id, and
/// a refused message does not spoil the next transaction.
#[test]
fn several_messages_per_session() {
    let s = start();
    let a = s.account("acme", ACME, true);
    let mut c = Smtp::submission_session(s.submission(), &a.user, &a.pass);
    let msg = "From: app@acme.test\nTo: bob@example.net\nSubject: one\n\nhi\n";
    let id1 = accepted_id(&c.send_mail("app@acme.test", &["bob@example.net"], msg));
    let dup = "From: app@acme.test\nSubject: a\nSubject: b\n\nhi\n";
    let r = c.send_mail("app@acme.test", &["bob@example.net"], dup);
    assert_eq!(r.code, 554, "{:?}", r.lines);
    let id2 = accepted_id(&c.send_mail("app@acme.test", &["bob@example.net"], msg));
    assert_ne!(id1, id2);
    assert_eq!(s.queue().len(), 2);
}
