//! The relay transport against a real smarthost: a second sesame instance,
//! whose submission listeners (STARTTLS + AUTH, and implicit TLS) take the
//! mail with its dev credential. The first instance trusts the second's
//! self-signed certificate through `delivery.relay.ca_file`, and refuses
//! any other certificate.

mod common;
mod delivery_peers;

use common::*;
use delivery_peers::*;

const FAST: &str = "[delivery]\npoll_ms = 50\nretry_base_secs = 1\nretry_max_delay_secs = 2\n\
                    smtp_timeout_secs = 10\n";

/// The smarthost: dev mode (tenant `dev`, user `dev`/`dev`, domain
/// `dev.sesame.test`), capturing what it accepts.
fn smarthost() -> Sesame {
    Sesame::start(Options::new().dev().extra(FAST))
}

/// A sender whose tenant `acme` (owning `dev.sesame.test` here too, so the
/// smarthost authorizes the From) delivers through `relay`.
fn relaying_sesame(relay: &str) -> (Sesame, Account) {
    let s = Sesame::start(Options::new().extra(&format!("{FAST}\n[delivery.relay]\n{relay}")));
    let acct = s.account("acme", "dev.sesame.test", true);
    s.cli_ok(&["tenant", "set", "acme", "--delivery", "relay"]);
    (s, acct)
}

fn relay_config(host: &Sesame, listener: &str, tls: &str, password: &str, ca: &str) -> String {
    format!(
        "host = \"127.0.0.1\"\nport = {}\ntls = \"{tls}\"\nusername = \"dev\"\n\
         password = \"{password}\"\nca_file = {ca:?}\n",
        host.addr(listener).port()
    )
}

/// Submits one message to `a`, waits for the relay's verdict, and returns
/// (id at `a`, the recipient's final state).
fn send_and_wait(
    a: &Sesame,
    acct: &Account,
    rcpt: &str,
    status: &str,
) -> (String, serde_json::Value) {
    let mut args = submit_args(a, acct, "app@dev.sesame.test", rcpt);
    args.extend([
        "--header".into(),
        "X-Relay-Probe: through-the-smarthost".into(),
    ]);
    let id = swaks_owned(&args).expect_accepted();
    let st = wait_status(a, &id, rcpt, status);
    (id, st)
}

/// The smarthost's queue entry named in the relay's 250 reply
/// (`250 2.0.0 Ok <id> (from ...)`).
fn relayed_entry(b: &Sesame, response: &str) -> serde_json::Value {
    let b_id = response
        .split_whitespace()
        .nth(3)
        .unwrap_or_else(|| panic!("no message id in {response:?}"));
    b.queue_entry(b_id)
        .unwrap_or_else(|| panic!("the smarthost has no message {b_id}: {:?}", b.queue()))
}

#[test]
fn relay_over_starttls_with_auth_reaches_the_smarthost() {
    let b = smarthost();
    let ca = b.cert_path().display().to_string();
    let (a, acct) = relaying_sesame(&relay_config(&b, "submission", "starttls", "dev", &ca));
    let (id, st) = send_and_wait(&a, &acct, "carol@example.net", "delivered");
    assert_eq!(st["transport"], "relay", "{st}");
    let response = st["last_response"].as_str().unwrap();
    assert!(response.starts_with("250"), "{response}");
    let entry = relayed_entry(&b, response);
    assert_eq!(entry["tenant"], "dev", "{entry}");
    assert_eq!(str_list(&entry, "recipients"), ["carol@example.net"]);
    let b_id = entry["message_id"].as_str().unwrap();
    let body = b.queued_body(b_id);
    assert!(
        body.contains("X-Relay-Probe: through-the-smarthost"),
        "{body}"
    );
    assert!(
        body.contains("with ESMTPSA"),
        "TLS and AUTH at the smarthost: {body}"
    );
    assert!(
        body.contains("d=dev.sesame.test"),
        "signed by the first instance: {body}"
    );
    assert!(b.logs().contains("auth ok"));
    assert_eq!(events_of_type(&a, "acme", &id, "Delivery").len(), 1);
}

#[test]
fn relay_over_implicit_tls_reaches_the_smarthost() {
    let b = smarthost();
    let ca = b.cert_path().display().to_string();
    let (a, acct) = relaying_sesame(&relay_config(&b, "submissions", "implicit", "dev", &ca));
    let (_, st) = send_and_wait(&a, &acct, "dave@example.net", "delivered");
    let entry = relayed_entry(&b, st["last_response"].as_str().unwrap());
    assert_eq!(str_list(&entry, "recipients"), ["dave@example.net"]);
    assert!(
        b.queued_body(entry["message_id"].as_str().unwrap())
            .contains("with ESMTPSA")
    );
}

/// A certificate the config does not trust is never accepted: the
/// recipient is deferred (kept queued) and nothing reaches the smarthost.
#[test]
fn relay_refuses_an_untrusted_certificate() {
    let b = smarthost();
    let stranger = smarthost();
    let ca = stranger.cert_path().display().to_string();
    let (a, acct) = relaying_sesame(&relay_config(&b, "submission", "starttls", "dev", &ca));
    let (_, st) = send_and_wait(&a, &acct, "erin@example.net", "deferred");
    let response = st["last_response"].as_str().unwrap();
    assert!(response.starts_with("451 4.4.1 relay"), "{response}");
    assert!(
        response.contains("STARTTLS") && response.contains("certificate"),
        "{response}"
    );
    assert!(b.queue().is_empty(), "nothing relayed: {:?}", b.queue());
}

/// Wrong credentials are a configuration problem, not the recipient's:
/// deferred, never bounced.
#[test]
fn relay_auth_failure_defers() {
    let b = smarthost();
    let ca = b.cert_path().display().to_string();
    let (a, acct) = relaying_sesame(&relay_config(&b, "submission", "starttls", "wrong", &ca));
    let (id, st) = send_and_wait(&a, &acct, "frank@example.net", "deferred");
    let response = st["last_response"].as_str().unwrap();
    assert!(response.contains("AUTH"), "{response}");
    assert!(events_of_type(&a, "acme", &id, "Bounce").is_empty());
    assert!(!events_of_type(&a, "acme", &id, "DeliveryDelay").is_empty());
    assert!(b.queue().is_empty());
}

/// `relay` without `[delivery.relay]` keeps mail queued and says why.
#[test]
fn relay_without_config_keeps_mail_queued() {
    let s = Sesame::start(Options::new().extra(FAST));
    let acct = s.account("acme", "acme.test", true);
    s.cli_ok(&["tenant", "set", "acme", "--delivery", "relay"]);
    let id =
        swaks_owned(&submit_args(&s, &acct, "app@acme.test", "g@example.net")).expect_accepted();
    let st = wait_status(&s, &id, "g@example.net", "deferred");
    assert!(
        st["last_response"]
            .as_str()
            .unwrap()
            .contains("[delivery.relay]"),
        "{st}"
    );
}

/// Config mistakes are refused at start, by key.
#[test]
fn relay_config_errors_name_the_key() {
    for (relay, key) in [
        (
            "host = \"\"\nport = 25\ntls = \"starttls\"\n",
            "delivery.relay.host",
        ),
        ("host = \"h\"\nport = 25\ntls = \"none\"\n", "tls"),
        (
            "host = \"h\"\nport = 25\ntls = \"starttls\"\nusername = \"u\"\n",
            "password",
        ),
        (
            "host = \"h\"\nport = 25\ntls = \"starttls\"\nusername = \"u\"\npassword_env = \"SESAME_TEST_UNSET_VARIABLE\"\n",
            "SESAME_TEST_UNSET_VARIABLE",
        ),
        (
            "host = \"h\"\nport = 25\ntls = \"starttls\"\nca_file = \"/nonexistent/ca.pem\"\n",
            "ca_file",
        ),
    ] {
        let (status, logs) =
            serve_expect_failure(&Options::new().extra(&format!("[delivery.relay]\n{relay}")));
        assert!(!status.success());
        assert!(logs.contains(key), "{relay}: expected {key} in:\n{logs}");
    }
}
