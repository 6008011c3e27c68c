//! Configuration sets: the CLI, the submission check on
//! `X-SES-CONFIGURATION-SET`, `TlsPolicy REQUIRE` against a receiver
//! without STARTTLS (smtp-sink through nsd-served MX), and signed event
//! webhooks received by a real HTTP server run by the test.

mod common;
mod delivery_peers;
mod nsd;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use delivery_peers::*;
use hmac::{Hmac, Mac};
use nsd::Nsd;
use serde_json::Value;
use sha2::Sha256;

const FAST: &str = "[delivery]\npoll_ms = 50\nretry_base_secs = 1\nretry_max_delay_secs = 2\n\
                    smtp_timeout_secs = 10\n";

fn with_set(args: &mut Vec<String>, set: &str) {
    args.extend(["--header".into(), format!("X-SES-CONFIGURATION-SET: {set}")]);
}

#[test]
fn config_sets_are_created_listed_and_checked_at_submission() {
    let s = Sesame::start(Options::new().extra(FAST));
    let acct = s.account("acme", "acme.test", true);
    let created = s.cli_json(&[
        "config-set",
        "create",
        "acme",
        "hooks",
        "--tls-policy",
        "require",
        "--webhook",
        "https://hooks.example.net/ses",
        "--events",
        "send,Bounce,deliverydelay",
    ]);
    assert_eq!(created["name"], "hooks");
    assert_eq!(created["tls_policy"], "REQUIRE");
    let dest = &created["event_destinations"][0];
    assert_eq!(
        str_list(dest, "events"),
        ["Send", "Bounce", "DeliveryDelay"]
    );
    assert!(
        dest["secret"].as_str().unwrap().starts_with("whsec_"),
        "{created}"
    );
    s.cli_ok(&["config-set", "create", "acme", "plain"]);

    let listed = s.cli_json(&["config-set", "list", "acme", "--json"]);
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["hooks", "plain"]);
    assert_eq!(listed[1]["tls_policy"], "OPTIONAL");
    assert!(
        listed[0]["event_destinations"][0].get("secret").is_none(),
        "secrets are shown once: {listed}"
    );

    for (args, needle) in [
        (
            vec!["config-set", "create", "acme", "hooks"],
            "already exists",
        ),
        (
            vec![
                "config-set",
                "create",
                "acme",
                "x",
                "--webhook",
                "http://h/",
                "--events",
                "open",
            ],
            "unknown event type 'open'",
        ),
        (
            vec![
                "config-set",
                "create",
                "acme",
                "x",
                "--webhook",
                "ftp://h/",
                "--events",
                "send",
            ],
            "http://",
        ),
        (
            vec![
                "config-set",
                "create",
                "acme",
                "x",
                "--tls-policy",
                "sometimes",
            ],
            "--tls-policy",
        ),
        (
            vec!["config-set", "create", "acme", "bad name"],
            "letters, digits",
        ),
        (vec!["config-set", "create", "nobody", "x"], "nobody"),
    ] {
        let (st, _, err) = s.cli(&args);
        assert!(!st.success() && err.contains(needle), "{args:?}: {err}");
    }

    // SES refuses a set the account does not have, and takes one it has.
    let mut args = submit_args(&s, &acct, "app@acme.test", "bob@example.net");
    with_set(&mut args, "nope");
    let out = swaks_owned(&args);
    out.assert_reply("554 5.3.0 Configuration set <nope> does not exist.");
    assert!(s.queue().is_empty(), "nothing queued for a refused message");
    let mut args = submit_args(&s, &acct, "app@acme.test", "bob@example.net");
    with_set(&mut args, "plain");
    let id = swaks_owned(&args).expect_accepted();
    wait_status(&s, &id, "bob@example.net", "delivered");
}

fn zone(origin: &str, body: &str) -> String {
    format!(
        "$ORIGIN {origin}.\n$TTL 60\n@ IN SOA ns.{origin}. admin.{origin}. 1 60 60 600 60\n\
         @ IN NS ns.{origin}.\nns IN A 127.0.0.1\n{body}"
    )
}

/// smtp-sink offers no STARTTLS: a REQUIRE message is deferred with the
/// reason recorded, then bounces at the maximum age; the same receiver
/// takes a message without the set, so the refusal is the policy's.
#[test]
fn tls_require_never_crosses_a_plaintext_hop() {
    let nsd = Nsd::start(&[(
        "sink.test",
        &zone("sink.test", "@ IN MX 10 mx\nmx IN A 127.0.0.1\n"),
    )]);
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(port, &dir.path().join("sink"), &[]);
    let s = Sesame::start(Options::new().extra(&format!(
        "[dns]\nnameservers = [\"{}\"]\n\n{FAST}mx_port = {port}\nmax_age_secs = 4\n",
        nsd.addr
    )));
    let acct = s.account("acme", "acme.test", true);
    s.cli_ok(&["tenant", "set", "acme", "--delivery", "mx"]);
    s.cli_ok(&[
        "config-set",
        "create",
        "acme",
        "secure",
        "--tls-policy",
        "require",
    ]);

    let mut args = submit_args(&s, &acct, "app@acme.test", "alice@sink.test");
    with_set(&mut args, "secure");
    let id = swaks_owned(&args).expect_accepted();
    let st = wait_status(&s, &id, "alice@sink.test", "deferred");
    let response = st["last_response"].as_str().unwrap();
    assert!(response.starts_with("451"), "{response}");
    assert!(
        response.contains("STARTTLS not offered") && response.contains("TlsPolicy REQUIRE"),
        "{response}"
    );
    let delays = events_of_type(&s, "acme", &id, "DeliveryDelay");
    assert!(!delays.is_empty());
    assert!(
        delays[0]["deliveryDelay"]["delayedRecipients"][0]["diagnosticCode"]
            .as_str()
            .unwrap()
            .contains("TlsPolicy REQUIRE"),
        "{delays:?}"
    );
    let st = wait_status(&s, &id, "alice@sink.test", "bounced");
    assert!(
        st["last_response"]
            .as_str()
            .unwrap()
            .contains("TlsPolicy REQUIRE"),
        "{st}"
    );
    let bounces = events_of_type(&s, "acme", &id, "Bounce");
    assert_eq!(bounces.len(), 1);
    assert_eq!(bounces[0]["bounce"]["bounceType"], "Transient");

    let plain =
        swaks_owned(&submit_args(&s, &acct, "app@acme.test", "bob@sink.test")).expect_accepted();
    wait_status(&s, &plain, "bob@sink.test", "delivered");
    let got = sink.messages();
    assert_eq!(got.len(), 1, "only the message without REQUIRE arrived");
    assert!(got[0].contains("bob@sink.test") && !got[0].contains("alice@sink.test"));
}

/// One HTTP request as the test's server saw it.
struct Request {
    headers: HashMap<String, String>,
    body: String,
}

/// A minimal HTTP/1.1 server on 127.0.0.1:port: answers 200 to every POST
/// and hands each request to the test.
fn http_server(port: u16) -> mpsc::Receiver<Request> {
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the webhook server");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut headers = HashMap::new();
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                }
            }
            let len: usize = headers
                .get("content-length")
                .and_then(|l| l.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .unwrap();
            let _ = tx.send(Request {
                headers,
                body: String::from_utf8(body).unwrap(),
            });
        }
    });
    rx
}

fn verify(req: &Request, secret: &str) {
    let ts = &req.headers["x-sesame-timestamp"];
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{ts}.{}", req.body).as_bytes());
    let want = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(
        req.headers["x-sesame-signature"], want,
        "signature over timestamp.body"
    );
    assert_eq!(req.headers["content-type"], "application/json");
}

/// The endpoint is down when the events happen: delivery goes on, the
/// POSTs are retried, and once the endpoint listens they arrive signed, in
/// SES's shape, only for the event types asked for.
#[test]
fn webhooks_are_signed_and_retried_until_the_endpoint_answers() {
    let s = Sesame::start(Options::new().extra(FAST));
    let acct = s.account("acme", "acme.test", true);
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/ses-events");
    let created = s.cli_json(&[
        "config-set",
        "create",
        "acme",
        "hooks",
        "--webhook",
        &url,
        "--events",
        "send,delivery",
    ]);
    let secret = created["event_destinations"][0]["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let mut args = submit_args(&s, &acct, "app@acme.test", "bob@example.net");
    with_set(&mut args, "hooks");
    let id = swaks_owned(&args).expect_accepted();
    wait_status(&s, &id, "bob@example.net", "delivered");
    assert!(
        s.log
            .wait_for(|l| l.contains("event webhook POST failed; will retry")),
        "no failed POST logged:\n{}",
        s.logs()
    );
    let requests = http_server(port);
    let mut kinds = Vec::new();
    for _ in 0..2 {
        let req = requests
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|_| panic!("no webhook POST:\n{}", s.logs()));
        verify(&req, &secret);
        let event: Value = serde_json::from_str(&req.body).unwrap();
        assert_eq!(event["mail"]["messageId"], id.as_str());
        assert_eq!(
            event["mail"]["tags"]["ses:configuration-set"],
            serde_json::json!(["hooks"])
        );
        kinds.push(event["eventType"].as_str().unwrap().to_string());
    }
    kinds.sort();
    assert_eq!(kinds, ["Delivery", "Send"]);
    // Each POST is taken once; nothing else was asked for.
    assert!(s.log.wait_for(|l| l.contains("event webhook delivered")));
    assert!(
        requests.recv_timeout(Duration::from_secs(2)).is_err(),
        "no further POSTs"
    );
}

/// An endpoint that accepts the connection and never answers holds up
/// nothing: the message is delivered while its webhook POST hangs.
#[test]
fn a_hanging_webhook_never_blocks_delivery() {
    let s = Sesame::start(Options::new().extra(FAST));
    let acct = s.account("acme", "acme.test", true);
    let hang = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", hang.local_addr().unwrap());
    let (seen_tx, seen) = mpsc::channel();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in hang.incoming().flatten() {
            held.push(stream);
            let _ = seen_tx.send(());
        }
    });
    s.cli_ok(&[
        "config-set",
        "create",
        "acme",
        "slow",
        "--webhook",
        &url,
        "--events",
        "send,delivery",
    ]);
    let mut args = submit_args(&s, &acct, "app@acme.test", "bob@example.net");
    with_set(&mut args, "slow");
    let id = swaks_owned(&args).expect_accepted();
    seen.recv_timeout(PATIENCE).expect("the webhook connection");
    wait_status(&s, &id, "bob@example.net", "delivered");
    assert_eq!(events_of_type(&s, "acme", &id, "Delivery").len(), 1);
    assert!(!s.logs().contains("event webhook delivered"));
}
