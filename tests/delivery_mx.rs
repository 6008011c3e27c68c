//! The mx transport end to end: swaks submits to a tenant whose delivery is
//! `mx`; sesame finds the recipient's MX through a real DNS server (nsd,
//! serving test zones) and delivers to a real receiving MTA (Postfix's
//! smtp-sink), whose fault options give 4xx and 5xx answers.

mod common;
mod delivery_peers;
mod nsd;

use common::*;
use delivery_peers::*;
use nsd::Nsd;

fn zone(origin: &str, body: &str) -> String {
    format!(
        "$ORIGIN {origin}.\n$TTL 60\n@ IN SOA ns.{origin}. admin.{origin}. 1 60 60 600 60\n\
         @ IN NS ns.{origin}.\nns IN A 127.0.0.1\n{body}"
    )
}

/// nsd with `sink.test` (MX → 127.0.0.1) and `backup.test`, whose best MX
/// (127.0.0.2) refuses connections and whose second one is the sink.
fn dns() -> Nsd {
    Nsd::start(&[
        (
            "sink.test",
            &zone("sink.test", "@ IN MX 10 mx\nmx IN A 127.0.0.1\n"),
        ),
        (
            "backup.test",
            &zone(
                "backup.test",
                "@ IN MX 10 dead\n@ IN MX 20 mx.sink.test.\ndead IN A 127.0.0.2\n",
            ),
        ),
    ])
}

fn mx_sesame(nsd: &Nsd, sink_port: u16) -> (Sesame, Account) {
    let s = Sesame::start(Options::new().extra(&format!(
        "[dns]\nnameservers = [\"{}\"]\n\n[delivery]\npoll_ms = 50\nretry_base_secs = 1\n\
         retry_max_delay_secs = 2\nmx_port = {sink_port}\nsmtp_timeout_secs = 10\n",
        nsd.addr
    )));
    let acct = s.account("acme", "acme.test", true);
    s.cli_ok(&["tenant", "set", "acme", "--delivery", "mx"]);
    (s, acct)
}

#[test]
fn mail_reaches_a_real_mta_through_mx_lookup_signed() {
    let nsd = dns();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(port, &dir.path().join("sink"), &[]);
    let (s, acct) = mx_sesame(&nsd, port);
    s.cli_ok(&["config-set", "create", "acme", "marketing"]);
    let mut args = submit_args(
        &s,
        &acct,
        "app@acme.test",
        "alice@sink.test,bob@backup.test",
    );
    args.extend([
        "--header".into(),
        "X-SES-CONFIGURATION-SET: marketing".into(),
    ]);
    let id = swaks_owned(&args).expect_accepted();
    let a = wait_status(&s, &id, "alice@sink.test", "delivered");
    let b = wait_status(&s, &id, "bob@backup.test", "delivered");
    assert_eq!(a["transport"], "mx");
    assert!(
        a["last_response"].as_str().unwrap().starts_with("250"),
        "{a}"
    );
    assert!(
        b["last_response"]
            .as_str()
            .unwrap()
            .contains("mx.sink.test"),
        "{b}"
    );
    let got = sink.messages();
    assert_eq!(got.len(), 2, "one transaction per destination domain");
    for m in &got {
        assert!(
            m.contains("DKIM-Signature:") && m.contains("d=acme.test"),
            "{m}"
        );
        assert!(m.contains(&format!("<{id}@{HOSTNAME}>")), "{m}");
        assert!(
            !m.contains("X-SES-CONFIGURATION-SET"),
            "X-SES-* stripped: {m}"
        );
    }
    let delivery = events_of_type(&s, "acme", &id, "Delivery");
    assert_eq!(delivery.len(), 2);
    assert_eq!(
        delivery[0]["mail"]["tags"]["ses:configuration-set"],
        serde_json::json!(["marketing"])
    );
    assert!(s.logs().contains("MX host failed; trying the next"));
}

#[test]
fn a_5xx_gives_one_bounce_one_dsn_and_a_suppression_entry() {
    let nsd = dns();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let _sink = SmtpSink::start(port, &dir.path().join("sink"), &["-f", "rcpt"]);
    let (s, acct) = mx_sesame(&nsd, port);
    let id =
        swaks_owned(&submit_args(&s, &acct, "app@acme.test", "nobody@sink.test")).expect_accepted();
    let st = wait_status(&s, &id, "nobody@sink.test", "bounced");
    assert!(
        st["last_response"].as_str().unwrap().starts_with("5"),
        "{st}"
    );
    assert_eq!(st["attempts"], 1, "permanent failures are never retried");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let bounces = events_of_type(&s, "acme", &id, "Bounce");
    assert_eq!(bounces.len(), 1);
    assert_eq!(bounces[0]["bounce"]["bounceType"], "Permanent");
    assert_eq!(bounces[0]["bounce"]["bounceSubType"], "General");
    let dsns = system_entries(&s);
    assert_eq!(dsns.len(), 1, "exactly one DSN");
    assert_eq!(str_list(&dsns[0], "recipients"), ["app@acme.test"]);
    assert_eq!(dsns[0]["envelope_from"], "", "DSNs have the null sender");
    let dsn_id = dsns[0]["message_id"].as_str().unwrap();
    let dsn = s.cli_ok(&["queue", "show", dsn_id]);
    assert!(dsn.contains("report-type=delivery-status"), "{dsn}");
    assert!(
        dsn.contains("Final-Recipient: rfc822; nobody@sink.test"),
        "{dsn}"
    );
    let list = s.cli_json(&["suppression", "list", "acme", "--json"]);
    assert_eq!(list[0]["EmailAddress"], "nobody@sink.test");
    assert_eq!(list[0]["Reason"], "BOUNCE");
    assert_eq!(list[0]["MessageId"], id.as_str());
}

/// 4xx: deferred with a DeliveryDelay event; sesame is SIGKILLed during the
/// retry window, the receiver recovers, and after the restart the retry
/// (whose schedule is in queue.db) delivers.
#[test]
fn a_4xx_is_retried_across_a_restart_then_delivered() {
    let nsd = dns();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(port, &dir.path().join("soft"), &["-r", "rcpt"]);
    let (mut s, acct) = mx_sesame(&nsd, port);
    let id =
        swaks_owned(&submit_args(&s, &acct, "app@acme.test", "later@sink.test")).expect_accepted();
    let st = wait_status(&s, &id, "later@sink.test", "deferred");
    assert!(
        st["last_response"].as_str().unwrap().starts_with("4"),
        "{st}"
    );
    assert!(st["next_attempt_at"].as_i64().unwrap() > 0);
    let delays = events_of_type(&s, "acme", &id, "DeliveryDelay");
    assert!(!delays.is_empty());
    assert_eq!(
        delays[0]["deliveryDelay"]["delayedRecipients"][0]["emailAddress"],
        "later@sink.test"
    );
    s.kill9();
    sink.stop();
    let sink = SmtpSink::start(port, &dir.path().join("ok"), &[]);
    s.restart();
    let st = wait_status(&s, &id, "later@sink.test", "delivered");
    assert!(st["attempts"].as_i64().unwrap() >= 2, "{st}");
    assert_eq!(sink.messages().len(), 1);
    assert_eq!(events_of_type(&s, "acme", &id, "Delivery").len(), 1);
    assert!(
        system_entries(&s).is_empty(),
        "no DSN for a delivered message"
    );
}

/// The receiver hangs up after the message, before its reply: nothing is
/// known to be delivered, so the recipient is deferred, never bounced.
#[test]
fn a_connection_dropped_at_end_of_data_is_deferred() {
    let nsd = dns();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let _sink = SmtpSink::start(port, &dir.path().join("drop"), &["-q", "."]);
    let (s, acct) = mx_sesame(&nsd, port);
    let id =
        swaks_owned(&submit_args(&s, &acct, "app@acme.test", "drop@sink.test")).expect_accepted();
    let st = wait_status(&s, &id, "drop@sink.test", "deferred");
    assert!(
        st["last_response"]
            .as_str()
            .unwrap()
            .contains("connection lost"),
        "{st}"
    );
    assert!(events_of_type(&s, "acme", &id, "Bounce").is_empty());
    assert!(!events_of_type(&s, "acme", &id, "DeliveryDelay").is_empty());
}

/// `delivery.retention_hours = 0`: delivered mail leaves queue.db at the
/// next purge (one runs at every start); captured mail stays, as queue.db
/// is its only copy.
#[test]
fn finished_mail_is_purged_after_its_retention_but_captured_mail_stays() {
    let nsd = dns();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(port, &dir.path().join("sink"), &[]);
    let mut s = Sesame::start(Options::new().extra(&format!(
        "[dns]\nnameservers = [\"{}\"]\n\n[delivery]\npoll_ms = 50\nmx_port = {port}\n\
         smtp_timeout_secs = 10\nretention_hours = 0\n",
        nsd.addr
    )));
    let acct = s.account("acme", "acme.test", true);
    s.cli_ok(&["tenant", "set", "acme", "--delivery", "mx"]);
    let kept = s.account("beta", "beta.test", true);
    let sent =
        swaks_owned(&submit_args(&s, &acct, "app@acme.test", "alice@sink.test")).expect_accepted();
    let captured =
        swaks_owned(&submit_args(&s, &kept, "app@beta.test", "bob@example.net")).expect_accepted();
    wait_status(&s, &sent, "alice@sink.test", "delivered");
    wait_status(&s, &captured, "bob@example.net", "delivered");
    assert_eq!(sink.messages().len(), 1);
    s.stop();
    s.restart();
    assert!(
        s.log
            .wait_for(|l| l.contains("purged finished messages past their retention")),
        "{}",
        s.logs()
    );
    assert!(s.queue_entry(&sent).is_none(), "{:?}", s.queue());
    assert!(s.queue_entry(&captured).is_some(), "{:?}", s.queue());
    assert_eq!(
        events_of_type(&s, "acme", &sent, "Delivery").len(),
        1,
        "events stay"
    );
}

/// Messages to the same host one after another share one SMTP session
/// (RSET between them) instead of reconnecting.
#[test]
fn consecutive_messages_reuse_the_connection() {
    let nsd = dns();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(port, &dir.path().join("sink"), &[]);
    let (s, acct) = mx_sesame(&nsd, port);
    for i in 0..3 {
        let rcpt = format!("r{i}@sink.test");
        let id = swaks_owned(&submit_args(&s, &acct, "app@acme.test", &rcpt)).expect_accepted();
        wait_status(&s, &id, &rcpt, "delivered");
    }
    assert_eq!(sink.messages().len(), 3);
    assert!(
        s.log
            .wait_for(|l| l.matches("reused an idle connection").count() >= 2),
        "{}",
        s.logs()
    );
}
