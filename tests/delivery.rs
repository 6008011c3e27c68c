//! The delivery engine against real peers: swaks submits, the capture
//! transport and the SES mailbox simulator answer (this file), and the mx
//! transport delivers through nsd-served MX records to Postfix's smtp-sink
//! (`delivery_mx.rs`).

mod common;
mod delivery_peers;

use common::*;
use delivery_peers::*;

fn fast_delivery() -> Options {
    Options::new()
        .extra("[delivery]\npoll_ms = 50\nretry_base_secs = 1\nretry_max_delay_secs = 2\n")
}

/// Every simulator address gives SES's outcome and events, never leaves the
/// machine, and never touches the suppression list.
#[test]
fn simulator_addresses_give_ses_outcomes_and_events() {
    let s = Sesame::start(fast_delivery());
    let acct = s.account("acme", "acme.test", false);
    let sim = |l: &str| format!("{l}@simulator.amazonses.com");
    let rcpts: Vec<String> = ["success", "bounce", "ooto", "complaint", "suppressionlist"]
        .iter()
        .map(|l| sim(l))
        .collect();
    let mut args = submit_args(&s, &acct, "app@acme.test", &rcpts.join(","));
    args.extend([
        "--header".into(),
        "X-SES-MESSAGE-TAGS: campaign=spring".into(),
    ]);
    let id = swaks_owned(&args).expect_accepted();
    for (l, status) in [
        ("success", "delivered"),
        ("bounce", "bounced"),
        ("ooto", "delivered"),
        ("complaint", "delivered"),
        ("suppressionlist", "bounced"),
    ] {
        let st = wait_status(&s, &id, &sim(l), status);
        assert_eq!(st["transport"], "simulator", "{st}");
    }
    let send = events_of_type(&s, "acme", &id, "Send");
    assert_eq!(send.len(), 1);
    assert_eq!(send[0]["mail"]["messageId"], id.as_str());
    assert_eq!(
        send[0]["mail"]["tags"]["campaign"],
        serde_json::json!(["spring"])
    );
    let delivered: Vec<String> = events_of_type(&s, "acme", &id, "Delivery")
        .iter()
        .flat_map(|e| str_list(&e["delivery"], "recipients"))
        .collect();
    for l in ["success", "ooto", "complaint"] {
        assert!(delivered.contains(&sim(l)), "{delivered:?}");
    }
    let bounces = events_of_type(&s, "acme", &id, "Bounce");
    let find = |sub: &str| {
        bounces
            .iter()
            .find(|b| b["bounce"]["bounceSubType"] == sub)
            .unwrap_or_else(|| panic!("no {sub} bounce in {bounces:?}"))
            .clone()
    };
    let general = find("General");
    assert_eq!(general["bounce"]["bounceType"], "Permanent");
    assert_eq!(
        general["bounce"]["bouncedRecipients"][0]["emailAddress"],
        sim("bounce")
    );
    assert_eq!(general["bounce"]["bouncedRecipients"][0]["status"], "5.1.1");
    let suppressed = find("OnAccountSuppressionList");
    assert_eq!(
        suppressed["bounce"]["bouncedRecipients"][0]["emailAddress"],
        sim("suppressionlist")
    );
    let complaints = events_of_type(&s, "acme", &id, "Complaint");
    assert_eq!(complaints.len(), 1);
    assert_eq!(
        complaints[0]["complaint"]["complainedRecipients"][0]["emailAddress"],
        sim("complaint")
    );
    // bounce@ gives one DSN to the sender; ooto@ an auto-reply.
    let system = system_entries(&s);
    assert_eq!(system.len(), 2, "{system:?}");
    for e in &system {
        assert_eq!(str_list(e, "recipients"), ["app@acme.test"]);
    }
    let list = s.cli_json(&["suppression", "list", "acme", "--json"]);
    assert_eq!(
        list,
        serde_json::json!([]),
        "simulator results never suppress"
    );
    // X-SES-* headers are stripped before delivery, kept for events.
    assert!(s.queued_body(&id).contains("X-SES-MESSAGE-TAGS"));
}

/// Capture (the default): recorded delivered, the message kept readable.
#[test]
fn capture_records_delivery_and_keeps_the_message() {
    let s = Sesame::start(fast_delivery());
    let acct = s.account("acme", "acme.test", true);
    let id =
        swaks_owned(&submit_args(&s, &acct, "app@acme.test", "bob@example.net")).expect_accepted();
    let st = wait_status(&s, &id, "bob@example.net", "delivered");
    assert_eq!(st["transport"], "capture");
    assert_eq!(st["attempts"], 1);
    assert!(s.cli_ok(&["queue", "show", &id]).contains("DKIM-Signature"));
    let kinds: Vec<String> = events(&s, "acme", &id)
        .iter()
        .map(|e| e["eventType"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["Send", "Delivery"]);
    assert!(s.logs().contains("delivered"));
}

/// A suppressed address is accepted, not delivered, and bounces with
/// OnAccountSuppressionList (no DSN); removing it lets mail through again.
#[test]
fn suppressed_addresses_are_accepted_but_not_delivered() {
    let s = Sesame::start(fast_delivery());
    let acct = s.account("acme", "acme.test", true);
    s.cli_ok(&["suppression", "add", "acme", "Gone@Example.net"]);
    let list = s.cli_json(&["suppression", "list", "acme", "--json"]);
    assert_eq!(list[0]["EmailAddress"], "gone@example.net");
    assert_eq!(list[0]["Reason"], "BOUNCE");
    let id =
        swaks_owned(&submit_args(&s, &acct, "app@acme.test", "gone@example.net")).expect_accepted();
    let st = wait_status(&s, &id, "gone@example.net", "bounced");
    assert_eq!(st["transport"], "suppression");
    let b = events_of_type(&s, "acme", &id, "Bounce");
    assert_eq!(b.len(), 1);
    assert_eq!(b[0]["bounce"]["bounceType"], "Permanent");
    assert_eq!(b[0]["bounce"]["bounceSubType"], "OnAccountSuppressionList");
    assert!(
        system_entries(&s).is_empty(),
        "no DSN for suppressed addresses"
    );
    s.cli_ok(&["suppression", "remove", "acme", "gone@example.net"]);
    let (st, _, err) = s.cli(&["suppression", "remove", "acme", "gone@example.net"]);
    assert!(
        !st.success() && err.contains("not on the suppression list"),
        "{err}"
    );
    let id =
        swaks_owned(&submit_args(&s, &acct, "app@acme.test", "gone@example.net")).expect_accepted();
    wait_status(&s, &id, "gone@example.net", "delivered");
}
