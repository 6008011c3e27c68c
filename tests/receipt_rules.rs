//! Receipt rules and IP filters on the MX listener, driven through the CLI
//! and real SMTP: the default rule, no-match refusals, bounce replies on
//! the wire, add-header in the stored message, stop, webhooks received by
//! an HTTP server the test runs, TLS Require, and IP filters.

mod clamav;
mod common;
mod nsd;

use std::time::Duration;

use base64::Engine;
use clamav::{Clamd, EICAR, webhook_server};
use common::*;
use nsd::Nsd;
use serde_json::{Value, json};

/// Where the test mail comes from: a name in the zone nsd serves, without
/// records, so the checks get quick authoritative answers (no SPF, no
/// DMARC) instead of waiting on DNS timeouts.
const SENDER: &str = "someone@external.test";

/// A sesame receiving for acme.test, resolving on an nsd that serves the
/// zone `test` (kept alive with it).
fn start() -> (Sesame, Nsd) {
    start_with("")
}

fn start_with(extra: &str) -> (Sesame, Nsd) {
    let zone = "$ORIGIN test.\n$TTL 60\n\
                @ IN SOA ns.test. hostmaster.test. 1 3600 600 86400 60\n\
                @ IN NS ns.test.\nns IN A 127.0.0.1\n";
    let dns = Nsd::start(&[("test", zone)]);
    let s = Sesame::start(Options::new().extra(&format!(
        "[dns]\nnameservers = [\"{}\"]\n{extra}",
        dns.nameserver()
    )));
    s.create_tenant("acme");
    s.add_identity("acme", "acme.test", true);
    (s, dns)
}

fn add_rule(s: &Sesame, json: &str) {
    s.cli_ok(&["rule", "add", "acme", "--json", json]);
}

fn rule_names(s: &Sesame, tenant: &str) -> Vec<String> {
    match s.cli_json(&["rule", "list", tenant, "--json"]) {
        Value::Array(rules) => rules
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect(),
        other => panic!("rule list: {other}"),
    }
}

/// MAIL and one RCPT on MX (plain, or after STARTTLS); the RCPT reply.
fn rcpt(s: &Sesame, to: &str, tls: bool) -> String {
    let mut c = Smtp::open(s.mx());
    c.ehlo();
    if tls {
        c.starttls();
        c.ehlo();
    }
    c.expect(&format!("MAIL FROM:<{SENDER}>"), "250 2.1.0 Ok");
    c.cmd(&format!("RCPT TO:<{to}>")).last().to_string()
}

/// A whole message to `rcpts` over plain MX; its id.
fn deliver(s: &Sesame, rcpts: &[&str], subject: &str) -> String {
    let mut c = Smtp::open(s.mx());
    c.ehlo();
    let body = simple_data(SENDER, rcpts[0], subject);
    accepted_id(&c.send_mail(SENDER, rcpts, &body))
}

fn meta(s: &Sesame, id: &str) -> Value {
    assert!(is_ses_id(id));
    let out = sqlite3(
        &s.data_dir.join("queue.db"),
        &format!("SELECT meta FROM queue_entries WHERE message_id = '{id}';"),
    );
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("meta of {id}: {e}: {out:?}"))
}

/// (name, recipients) of the rules applied.
fn applied(meta: &Value) -> Vec<(String, Vec<String>)> {
    meta["rules"]
        .as_array()
        .unwrap_or_else(|| panic!("no rules in {meta:#}"))
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                str_list(r, "recipients"),
            )
        })
        .collect()
}

fn header_block(body: &str) -> &str {
    &body[..body.find("\r\n\r\n").expect("header block")]
}

#[test]
fn every_tenant_starts_with_the_default_rule() {
    let s = Sesame::start(Options::new().dev());
    s.create_tenant("acme");
    let default = json!([{
        "name": "default", "enabled": true, "recipients": [], "tlsPolicy": "Optional",
        "scanEnabled": true, "actions": [{"type": "store"}]
    }]);
    assert_eq!(s.cli_json(&["rule", "list", "dev", "--json"]), default);
    assert_eq!(s.cli_json(&["rule", "list", "acme", "--json"]), default);
    // The dev domain receives out of the box.
    let id = deliver(&s, &["anyone@dev.sesame.test"], "dev");
    assert_eq!(meta(&s, &id)["store"], true);
}

#[test]
fn bad_rules_are_refused_naming_the_field_and_change_nothing() {
    let (s, _dns) = start();
    let bad = [
        (
            r#"{"name":"x","actions":[{"type":"store"},{"type":"bounce","smtpReplyCode":"550","statusCode":"4.1.1","message":"no"}]}"#,
            "bad rule: actions[1].statusCode:",
        ),
        (
            r#"{"name":"x","recipients":["not an address@"],"actions":[{"type":"store"}]}"#,
            "bad rule: recipients[0]:",
        ),
        (
            r#"{"name":"x","tlsPolicy":"Sometimes","actions":[{"type":"store"}]}"#,
            "bad rule: tlsPolicy:",
        ),
        (
            r#"{"name":"x","actions":[{"type":"webhook"}]}"#,
            "bad rule: actions[0].url: missing",
        ),
        (
            r#"{"name":"x","actions":[]"#,
            "bad rule: the rule is not valid JSON",
        ),
        (
            r#"{"name":"default","actions":[{"type":"store"}]}"#,
            "tenant 'acme' already has a rule named 'default'",
        ),
    ];
    for (json, want) in bad {
        let (status, _, err) = s.cli(&["rule", "add", "acme", "--json", json]);
        assert!(!status.success(), "{json} was accepted");
        assert!(err.contains(want), "{json}: {err}");
    }
    let (status, _, err) = s.cli(&["rule", "move", "acme", "default", "--position", "5"]);
    assert!(
        !status.success() && err.contains("position 5 is out of range"),
        "{err}"
    );
    assert_eq!(rule_names(&s, "acme"), ["default"]);
}

#[test]
fn unmatched_recipients_are_refused_with_mailbox_does_not_exist() {
    let (s, _dns) = start();
    s.cli_ok(&["rule", "remove", "acme", "default"]);
    add_rule(
        &s,
        r#"{"name":"sales","recipients":["sales@acme.test"],"actions":[{"type":"store"}]}"#,
    );
    assert_eq!(
        rcpt(&s, "info@acme.test", false),
        "550 5.1.1 Mailbox does not exist"
    );
    assert_eq!(rcpt(&s, "Sales+news@acme.test", false), "250 2.1.5 Ok");
    // A domain nobody holds is still no relay.
    assert_eq!(
        rcpt(&s, "x@elsewhere.test", false),
        "550 5.7.1 Relaying denied"
    );
    let id = deliver(&s, &["sales+news@acme.test"], "sales");
    assert_eq!(
        applied(&meta(&s, &id)),
        [("sales".into(), vec!["sales+news@acme.test".into()])]
    );
}

/// Bounce replies on the wire (own text, and an SES template), add-header
/// in the stored message, and stop ending the rule set for a recipient.
#[test]
fn bounce_add_header_and_stop() {
    let (s, _dns) = start();
    add_rule(
        &s,
        r#"{"name":"gone","recipients":["gone@acme.test"],
            "actions":[{"type":"bounce","smtpReplyCode":"550","statusCode":"5.1.1","message":"This mailbox has moved"}]}"#,
    );
    add_rule(
        &s,
        r#"{"name":"full","recipients":["full@acme.test"],"actions":[{"type":"bounce","template":"ExceededQuota"}]}"#,
    );
    add_rule(
        &s,
        r#"{"name":"tag","actions":[{"type":"addHeader","headerName":"X-Tagged","headerValue":"all"}]}"#,
    );
    s.cli_ok(&[
        "rule",
        "add",
        "acme",
        "--position",
        "1",
        "--json",
        r#"{"name":"vip","recipients":["vip@acme.test"],
            "actions":[{"type":"addHeader","headerName":"X-Vip","headerValue":"yes"},{"type":"store"},{"type":"stop"}]}"#,
    ]);
    assert_eq!(
        rule_names(&s, "acme"),
        ["vip", "default", "gone", "full", "tag"]
    );

    assert_eq!(
        rcpt(&s, "gone@acme.test", false),
        "550 5.1.1 This mailbox has moved"
    );
    assert_eq!(rcpt(&s, "full@acme.test", false), "552 5.2.2 Mailbox full");

    let id = deliver(&s, &["vip@acme.test"], "vip");
    let head = s.queued_body(&id);
    let head = header_block(&head);
    assert!(head.contains("\r\nX-Vip: yes\r\n"), "{head}");
    assert!(!head.contains("X-Tagged"), "stop did not stop:\n{head}");
    let m = meta(&s, &id);
    assert_eq!(
        m["rules"],
        json!([{"name": "vip", "recipients": ["vip@acme.test"], "actions": [
            {"type": "addHeader", "headerName": "X-Vip", "headerValue": "yes"},
            {"type": "store"}, {"type": "stop"}]}]),
        "{m:#}"
    );

    let id = deliver(&s, &["info@acme.test"], "info");
    let head = s.queued_body(&id);
    let head = header_block(&head);
    assert!(head.contains("\r\nX-Tagged: all\r\n"), "{head}");
    assert!(!head.contains("X-Vip"), "{head}");

    // One tenant, one entry: the headers of both recipients' rules.
    let id = deliver(&s, &["info@acme.test", "vip@acme.test"], "both");
    let body = s.queued_body(&id);
    let head = header_block(&body);
    assert!(
        head.contains("X-Tagged: all") && head.contains("X-Vip: yes"),
        "{head}"
    );
    assert_eq!(
        applied(&meta(&s, &id)),
        [
            ("vip".into(), vec!["vip@acme.test".into()]),
            ("default".into(), vec!["info@acme.test".into()]),
            ("tag".into(), vec!["info@acme.test".into()]),
        ]
    );
}

/// The webhook action posts SES's Received notification, with the raw
/// message when asked, retrying after a 503; a rule without store leaves
/// `store: false`.
#[test]
fn webhook_posts_the_received_notification() {
    let (s, _dns) = start();
    let (url, posts) = webhook_server(&[503, 200]);
    s.cli_ok(&[
        "rule",
        "add",
        "acme",
        "--position",
        "1",
        "--json",
        &format!(
            r#"{{"name":"hook","recipients":["hooked@acme.test"],
                "actions":[{{"type":"webhook","url":"{url}","includeContent":true}},{{"type":"stop"}}]}}"#
        ),
    ]);
    let id = deliver(&s, &["hooked@acme.test"], "notify me");
    let refused = posts
        .recv_timeout(PATIENCE)
        .expect("no webhook POST arrived");
    let post = posts
        .recv_timeout(PATIENCE)
        .expect("the webhook POST was not retried");
    assert_eq!(post.body, refused.body);
    assert_eq!(post.path, "/hooks/virus?token=secret");
    assert_eq!(post.content_type, "application/json");
    let n = post.body;
    assert_eq!(n["notificationType"], "Received", "{n:#}");
    assert_eq!(
        n["receipt"]["recipients"],
        json!(["hooked@acme.test"]),
        "{n:#}"
    );
    assert_eq!(n["receipt"]["action"]["type"], "Webhook", "{n:#}");
    assert_eq!(n["receipt"]["action"]["ruleName"], "hook", "{n:#}");
    for verdict in [
        "spfVerdict",
        "dkimVerdict",
        "dmarcVerdict",
        "virusVerdict",
        "spamVerdict",
    ] {
        assert!(
            n["receipt"][verdict]["status"].is_string(),
            "{verdict}: {n:#}"
        );
    }
    assert_eq!(n["mail"]["messageId"], id.as_str(), "{n:#}");
    assert_eq!(n["mail"]["source"], SENDER, "{n:#}");
    assert_eq!(
        n["mail"]["destination"],
        json!(["hooked@acme.test"]),
        "{n:#}"
    );
    assert_eq!(n["mail"]["commonHeaders"]["subject"], "notify me", "{n:#}");
    let content = base64::engine::general_purpose::STANDARD
        .decode(n["content"].as_str().expect("content"))
        .unwrap();
    // The sqlite3 CLI ends what it prints with a newline.
    assert_eq!(
        format!("{}\n", String::from_utf8(content).unwrap()),
        s.queued_body(&id)
    );
    let m = meta(&s, &id);
    assert_eq!(m["store"], false, "{m:#}");
    assert!(
        s.log
            .wait_for(|t| t.contains("webhook notification delivered")),
        "{}",
        s.logs()
    );
    // Delivered on the second attempt: nothing more is posted.
    assert!(posts.recv_timeout(Duration::from_millis(0)).is_err());
}

/// `scanEnabled: false` keeps clamd away from the mail of that rule (the
/// EICAR attachment stays, virusVerdict DISABLED), while mail of the
/// default rule is scanned and stripped.
#[test]
fn scan_enabled_false_skips_clamd_for_its_mail() {
    let clamd = Clamd::start();
    let (s, _dns) = start_with(&format!(
        "[scan]\nenabled = true\nclamd = {:?}\ntimeout_secs = 20\n",
        clamd.url()
    ));
    s.cli_ok(&[
        "rule",
        "add",
        "acme",
        "--position",
        "1",
        "--json",
        r#"{"name":"raw","recipients":["raw@acme.test"],"scanEnabled":false,"actions":[{"type":"store"},{"type":"stop"}]}"#,
    ]);
    let files = tempfile::tempdir().unwrap();
    let eicar = files.path().join("eicar.com");
    std::fs::write(&eicar, EICAR).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&EICAR.as_bytes()[..45]);
    let send = |to: &str| {
        swaks(&[
            "--server",
            &s.server_arg("mx"),
            "--from",
            SENDER,
            "--to",
            to,
            "--attach",
            &format!("@{}", eicar.display()),
        ])
        .expect_accepted()
    };
    let id = send("raw@acme.test");
    assert!(s.queued_body(&id).contains(&b64), "{}", s.queued_body(&id));
    let m = meta(&s, &id);
    assert_eq!(m["receipt"]["virusVerdict"]["status"], "DISABLED", "{m:#}");
    assert_eq!(m["scan"]["verdict"], "DISABLED", "{m:#}");

    let id = send("info@acme.test");
    assert!(!s.queued_body(&id).contains(&b64), "{}", s.queued_body(&id));
    assert_eq!(meta(&s, &id)["receipt"]["virusVerdict"]["status"], "FAIL");
}

#[test]
fn tls_require_refuses_plaintext_and_accepts_starttls() {
    let (s, _dns) = start();
    s.cli_ok(&[
        "rule",
        "add",
        "acme",
        "--position",
        "1",
        "--json",
        r#"{"name":"secure","recipients":["secure@acme.test"],"tlsPolicy":"Require","actions":[{"type":"store"}]}"#,
    ]);
    assert_eq!(
        rcpt(&s, "secure@acme.test", false),
        "530 5.7.0 Must issue a STARTTLS command first"
    );
    assert_eq!(rcpt(&s, "other@acme.test", false), "250 2.1.5 Ok");
    let out = swaks(&[
        "--server",
        &s.server_arg("mx"),
        "--tls",
        "--from",
        SENDER,
        "--to",
        "secure@acme.test",
    ]);
    let id = out.expect_accepted();
    assert_eq!(applied(&meta(&s, &id))[0].0, "secure");
}

#[test]
fn ip_filters_block_and_allow_per_tenant() {
    let (s, _dns) = start();
    s.create_tenant("other");
    s.add_identity("other", "other.test", true);
    s.cli_ok(&[
        "ip-filter",
        "add",
        "acme",
        "loopback",
        "--policy",
        "block",
        "--cidr",
        "127.0.0.0/8",
    ]);
    const BLOCKED: &str = "550 5.7.1 Message rejected: the sending IP address is blocked by the recipient's IP address filter";
    assert_eq!(rcpt(&s, "info@acme.test", false), BLOCKED);
    assert_eq!(rcpt(&s, "info@other.test", false), "250 2.1.5 Ok");

    s.cli_ok(&[
        "ip-filter",
        "add",
        "acme",
        "me",
        "--policy",
        "allow",
        "--cidr",
        "127.0.0.1",
    ]);
    assert_eq!(
        s.cli_json(&["ip-filter", "list", "acme", "--json"]),
        json!([
            {"name": "loopback", "policy": "Block", "cidr": "127.0.0.0/8"},
            {"name": "me", "policy": "Allow", "cidr": "127.0.0.1/32"}
        ])
    );
    assert_eq!(rcpt(&s, "info@acme.test", false), "250 2.1.5 Ok");
    s.cli_ok(&["ip-filter", "remove", "acme", "me"]);
    assert_eq!(rcpt(&s, "info@acme.test", false), BLOCKED);
    let (status, _, err) = s.cli(&[
        "ip-filter",
        "add",
        "acme",
        "bad",
        "--policy",
        "block",
        "--cidr",
        "10.0.0.0/40",
    ]);
    assert!(!status.success() && err.contains("0-32"), "{err}");
}
