//! Graceful shutdown: SIGTERM/SIGINT stop accepting, let transactions in
//! flight finish, tell idle sessions `421 4.3.2`, and exit 0.

mod common;

use common::*;

const SHUTTING_DOWN_LOG: &str = "shutting down";
const SHUTTING_DOWN: &str = "421 4.3.2 Service shutting down";
const FROM: &str = "someone@external.example";
const RCPT: &str = "info@acme.test";

fn start_with_acme(options: Options) -> Sesame {
    let s = Sesame::start(options);
    s.create_tenant("acme");
    s.add_identity("acme", "acme.test", true);
    s
}

/// MX session left inside DATA with the first half of a message sent.
fn open_in_data(s: &Sesame, subject: &str) -> Smtp {
    let mut c = Smtp::open(s.mx());
    c.ehlo();
    c.expect(&format!("MAIL FROM:<{FROM}>"), "250 2.1.0 Ok");
    c.expect(&format!("RCPT TO:<{RCPT}>"), "250 2.1.5 Ok");
    c.expect("DATA", "354 End data with <CR><LF>.<CR><LF>");
    c.send(
        format!(
            "From: <{FROM}>\r\nTo: <{RCPT}>\r\nSubject: {subject}\r\n\r\n\
             first half of the body\r\n"
        )
        .as_bytes(),
    );
    c
}

#[track_caller]
fn term_and_wait_for_log(s: &mut Sesame, sig: &str) {
    send_signal(s.pid(), sig);
    assert!(
        s.log.wait_for(|l| l.contains(SHUTTING_DOWN_LOG)),
        "no {SHUTTING_DOWN_LOG:?} log after SIG{sig}; running: {}\nstderr:\n{}",
        s.is_running(),
        s.logs()
    );
}

/// After shutdown, the session's next command gets `421 4.3.2` (or finds the
/// connection closed), never a normal reply, and the connection then closes.
#[track_caller]
fn next_command_refused(c: &mut Smtp, line: &str) {
    let _ = c.send_lossy(format!("{line}\r\n").as_bytes());
    if let Ok(r) = c.try_reply() {
        assert_eq!(r.last(), SHUTTING_DOWN, "reply to {line:?}: {:?}", r.lines);
        c.expect_closed();
    }
}

/// The session must get an unprompted `421 4.3.2` and then be closed.
#[track_caller]
fn expect_421_and_close(c: &mut Smtp, what: &str) {
    let r = c
        .try_reply()
        .unwrap_or_else(|e| panic!("{what}: no 421 before close: {e}"));
    assert_eq!(r.last(), SHUTTING_DOWN, "{what}: {:?}", r.lines);
    c.expect_closed();
}

/// A connection made after shutdown began must be refused, or closed
/// without a 220. `c` is None when the connect itself was refused.
fn greeted_after_shutdown(c: Option<Smtp>, implicit_tls: bool) -> Result<(), String> {
    let Some(mut c) = c else {
        return Ok(());
    };
    if implicit_tls && c.upgrade().is_err() {
        return Ok(());
    }
    match c.try_reply() {
        Ok(r) if r.code == 220 => {
            let then = c.try_reply().map(|r| r.lines);
            Err(format!("got a greeting: {:?}, then {then:?}", r.lines))
        }
        _ => Ok(()),
    }
}

/// Rule: a message mid-DATA at SIGTERM finishes, is queued durably, and sesame exits 0.
#[test]
fn message_in_data_finishes_after_sigterm() {
    let mut s = start_with_acme(Options::new());
    let mut c = open_in_data(&s, "in flight");

    term_and_wait_for_log(&mut s, "TERM");
    c.send(b"second half of the body\r\n.\r\n");
    let r = c.reply();
    let id = accepted_id(&r);
    next_command_refused(&mut c, &format!("MAIL FROM:<{FROM}>"));

    let st = s.wait_exit();
    assert_eq!(
        st.code(),
        Some(0),
        "exit status {st}\nstderr:\n{}",
        s.logs()
    );

    s.restart();
    let e = s
        .queue_entry(&id)
        .unwrap_or_else(|| panic!("{id} not in the queue after restart"));
    assert_eq!(str_list(&e, "recipients"), vec![RCPT], "{e}");
    let body = s.queued_body(&id);
    assert!(
        body.contains("first half of the body") && body.contains("second half of the body"),
        "queued body is not the whole message:\n{body}"
    );
    assert!(s.stop().success(), "exit status after the restart");
}

/// Rule: idle sessions get `421 4.3.2 Service shutting down` on SIGTERM/SIGINT; exit 0.
#[test]
fn idle_sessions_get_421_and_exit_zero() {
    for sig in ["TERM", "INT"] {
        let mut s = start_with_acme(Options::new());
        let acct = s.account("shop", "shop.test", true);
        let mut mx = Smtp::open(s.mx());
        mx.ehlo();
        let mut sub = Smtp::submission_session(s.submission(), &acct.user, &acct.pass);
        let mut subs = Smtp::open_tls(s.submissions());
        subs.ehlo();
        // Idle between transactions: one message already sent on this session.
        let mut done = Smtp::open(s.mx());
        done.ehlo();
        let r = done.send_mail(FROM, &[RCPT], &simple_data(FROM, RCPT, "before"));
        accepted_id(&r);

        term_and_wait_for_log(&mut s, sig);
        expect_421_and_close(&mut mx, &format!("SIG{sig} mx"));
        expect_421_and_close(&mut sub, &format!("SIG{sig} submission"));
        expect_421_and_close(&mut subs, &format!("SIG{sig} submissions"));
        expect_421_and_close(&mut done, &format!("SIG{sig} mx after a message"));

        let st = s.wait_exit();
        assert_eq!(
            st.code(),
            Some(0),
            "SIG{sig}: exit status {st}\nstderr:\n{}",
            s.logs()
        );
    }
}

/// Rule: once shutdown has started, no listener greets a new connection with 220.
#[test]
fn new_connections_refused_after_shutdown_starts() {
    let mut s = start_with_acme(Options::new());
    let mut busy = open_in_data(&s, "keeps the process alive");
    let mut idle = Smtp::open(s.mx());
    idle.ehlo();

    term_and_wait_for_log(&mut s, "TERM");
    // The idle session's 421 shows the shutdown has reached the sessions.
    expect_421_and_close(&mut idle, "idle mx");
    // A burst of connects first (each one the accept loops could still take),
    // then look at what each of them got.
    let mut attempts = Vec::new();
    for _ in 0..4 {
        for (name, tls) in [("mx", false), ("submission", false), ("submissions", true)] {
            attempts.push((name, tls, Smtp::try_connect(s.addr(name)).ok()));
        }
    }
    for (name, tls, c) in attempts {
        if let Err(e) = greeted_after_shutdown(c, tls) {
            panic!("{name} after shutdown started: {e}");
        }
    }
    assert!(s.is_running(), "the transaction in flight must keep it up");

    busy.send(b"second half\r\n.\r\n");
    let id = accepted_id(&busy.reply());
    let st = s.wait_exit();
    assert_eq!(
        st.code(),
        Some(0),
        "exit status {st}\nstderr:\n{}",
        s.logs()
    );
    assert!(s.queue_entry(&id).is_some(), "{id} not queued");
}

/// Rule: a transaction outliving `shutdown_grace_secs` is cut off unqueued; exit 0.
#[test]
fn stalled_transaction_cut_after_grace_period() {
    let mut s = start_with_acme(Options::new().limit("shutdown_grace_secs", 1));
    let mut c = open_in_data(&s, "never finished");

    term_and_wait_for_log(&mut s, "TERM");
    assert!(
        s.log.wait_for(|l| l.contains("shutdown grace period over")),
        "no grace-period log\nstderr:\n{}",
        s.logs()
    );
    // A closed connection (Err) is what we expect; a reply must not be 250.
    if let Ok(r) = c.try_reply() {
        assert_ne!(r.code, 250, "stalled message accepted: {:?}", r.lines);
    }
    let st = s.wait_exit();
    assert_eq!(
        st.code(),
        Some(0),
        "exit status {st}\nstderr:\n{}",
        s.logs()
    );
    assert!(
        s.queue().is_empty(),
        "a message that never got its final dot was queued: {:?}",
        s.queue()
    );
}

/// Rule: SIGTERM right after the `ready` line is already a graceful stop (exit 0).
#[test]
fn sigterm_right_after_ready_exits_zero() {
    // The window is short: several fresh starts make a lost race visible.
    for round in 0..8 {
        let mut s = Sesame::start(Options::new());
        let st = s.stop();
        assert_eq!(
            st.code(),
            Some(0),
            "round {round}: SIGTERM right after ready: exit status {st}\nstderr:\n{}",
            s.logs()
        );
    }
}
