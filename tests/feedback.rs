//! Asynchronous bounces and complaints: after a real submission, a remote
//! MTA's RFC 3464 DSN and a mailbox provider's RFC 5965 ARF report arrive
//! on the MX listener, addressed to the message's VERP envelope sender.
//! They become Bounce / DeliveryDelay / Complaint events and suppression
//! entries, never tenant mail and never a bounce of their own.

mod common;
mod delivery_peers;

use common::*;
use delivery_peers::*;

fn fast() -> Options {
    Options::new()
        .extra("[delivery]\npoll_ms = 50\nretry_base_secs = 1\nretry_max_delay_secs = 2\n")
}

/// Sends one message from tenant acme to `rcpts` and returns (id, its
/// VERP envelope sender) once it is delivered (captured).
fn sent_message(s: &Sesame, rcpts: &[&str]) -> (String, String) {
    let acct = s.account("acme", "acme.test", true);
    let id =
        swaks_owned(&submit_args(s, &acct, "app@acme.test", &rcpts.join(","))).expect_accepted();
    for r in rcpts {
        wait_status(s, &id, r, "delivered");
    }
    let verp = s.queue_entry(&id).unwrap()["envelope_from"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(verp.starts_with(&format!("{id}@")), "VERP sender: {verp}");
    (id, verp)
}

fn report_to_mx(s: &Sesame, to: &str, body: &str) -> Reply {
    let mut c = Smtp::open(s.mx());
    c.ehlo();
    c.send_mail("", &[to], body)
}

fn dsn(to: &str, per_recipient: &str) -> String {
    format!(
        "From: Mail Delivery System <MAILER-DAEMON@mx.remote.test>\nTo: <{to}>\n\
         Subject: Undelivered Mail Returned to Sender\nMIME-Version: 1.0\n\
         Content-Type: multipart/report; report-type=delivery-status;\n boundary=\"XX\"\n\n\
         --XX\nContent-Type: text/plain\n\nYour message could not be delivered.\n\n\
         --XX\nContent-Type: message/delivery-status\n\n\
         Reporting-MTA: dns; mx.remote.test\nArrival-Date: Thu, 26 Nov 2026 10:00:00 +0000\n\n\
         {per_recipient}\n--XX\nContent-Type: text/rfc822-headers\n\n\
         From: app@acme.test\nSubject: test\n\n--XX--\n"
    )
}

#[test]
fn a_late_dsn_gives_bounce_delay_and_suppression() {
    let s = Sesame::start(fast());
    let (id, verp) = sent_message(&s, &["bob@example.net", "carol@example.net"]);
    let body = dsn(
        &verp,
        "Final-Recipient: rfc822; Bob@Example.net\nAction: failed\nStatus: 5.1.1\n\
         Diagnostic-Code: smtp; 550 5.1.1 <bob@example.net>: Recipient address rejected\n\n\
         Final-Recipient: rfc822; carol@example.net\nAction: delayed\nStatus: 4.2.2\n\
         Diagnostic-Code: smtp; 452 4.2.2 mailbox full\n\n\
         Final-Recipient: rfc822; mallory@example.net\nAction: failed\nStatus: 5.1.1\n",
    );
    let reply = report_to_mx(&s, &verp, &body);
    assert!(reply.last().starts_with("250 2.0.0 Ok"), "{reply:?}");

    let bounces = events_of_type(&s, "acme", &id, "Bounce");
    assert_eq!(bounces.len(), 1, "{bounces:?}");
    let b = &bounces[0]["bounce"];
    assert_eq!(b["bounceType"], "Permanent");
    assert_eq!(b["reportingMTA"], "mx.remote.test");
    let bounced = b["bouncedRecipients"].as_array().unwrap();
    assert_eq!(
        bounced.len(),
        1,
        "only recipients of the message: {bounced:?}"
    );
    assert_eq!(bounced[0]["emailAddress"], "bob@example.net");
    assert_eq!(bounced[0]["status"], "5.1.1");
    assert!(
        bounced[0]["diagnosticCode"]
            .as_str()
            .unwrap()
            .contains("Recipient address rejected")
    );
    assert_eq!(bounces[0]["mail"]["messageId"], id.as_str());

    let delays = events_of_type(&s, "acme", &id, "DeliveryDelay");
    assert_eq!(delays.len(), 1);
    assert_eq!(
        delays[0]["deliveryDelay"]["delayedRecipients"][0]["emailAddress"],
        "carol@example.net"
    );

    let list = s.cli_json(&["suppression", "list", "acme", "--json"]);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["EmailAddress"], "bob@example.net");
    assert_eq!(list[0]["Reason"], "BOUNCE");
    assert_eq!(list[0]["MessageId"], id.as_str());
    assert_eq!(
        s.queue().len(),
        1,
        "the report is not queued as mail: {:?}",
        s.queue()
    );
    assert!(system_entries(&s).is_empty(), "no DSN about a DSN");
}

#[test]
fn an_arf_report_gives_a_complaint_and_suppression() {
    let s = Sesame::start(fast());
    let (id, verp) = sent_message(&s, &["dave@example.net", "erin@example.net"]);
    let arf = format!(
        "From: <fbl@isp.test>\nTo: <{verp}>\nSubject: FW: spam report\nMIME-Version: 1.0\n\
         Content-Type: multipart/report; report-type=feedback-report; boundary=\"FB\"\n\n\
         --FB\nContent-Type: text/plain\n\nThis is an email abuse report.\n\n\
         --FB\nContent-Type: message/feedback-report\n\n\
         Feedback-Type: abuse\nUser-Agent: isp-fbl/2.1\nVersion: 1\n\
         Original-Mail-From: <{verp}>\nOriginal-Rcpt-To: <erin@example.net>\n\n\
         --FB\nContent-Type: text/rfc822-headers\n\nFrom: app@acme.test\n\n--FB--\n"
    );
    let reply = report_to_mx(&s, &verp, &arf);
    assert!(reply.last().starts_with("250"), "{reply:?}");
    let complaints = events_of_type(&s, "acme", &id, "Complaint");
    assert_eq!(complaints.len(), 1);
    let c = &complaints[0]["complaint"];
    assert_eq!(
        c["complainedRecipients"],
        serde_json::json!([{"emailAddress": "erin@example.net"}])
    );
    assert_eq!(c["complaintFeedbackType"], "abuse");
    assert_eq!(c["userAgent"], "isp-fbl/2.1");
    let list = s.cli_json(&["suppression", "list", "acme", "--json"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["EmailAddress"], "erin@example.net");
    assert_eq!(list[0]["Reason"], "COMPLAINT");
}

/// An auto-reply or junk sent to a VERP address is accepted (no
/// backscatter) and logged; nothing is recorded. An address that names no
/// message we sent is not a feedback address.
#[test]
fn unreadable_feedback_is_accepted_and_ignored() {
    let s = Sesame::start(fast());
    let (id, verp) = sent_message(&s, &["frank@example.net"]);
    let reply = report_to_mx(
        &s,
        &verp,
        "From: <frank@example.net>\nSubject: Out of office\n\nI am away.\n",
    );
    assert!(reply.last().starts_with("250"), "{reply:?}");
    assert!(
        s.log
            .wait_for(|l| l.contains("not a delivery-status or feedback report"))
    );
    assert!(events_of_type(&s, "acme", &id, "Bounce").is_empty());
    assert_eq!(
        s.cli_json(&["suppression", "list", "acme", "--json"]),
        serde_json::json!([])
    );
    assert_eq!(s.queue().len(), 1);

    // VERP-shaped, on the default MAIL FROM domain (no tenant's), but
    // naming no message sent from there: relaying denied as any stranger.
    let forged = format!("{}@{HOSTNAME}", id.replace('0', "f"));
    let mut c = Smtp::open(s.mx());
    c.ehlo();
    c.expect("MAIL FROM:<>", "250 2.1.0 Ok");
    let r = c.cmd(&format!("RCPT TO:<{forged}>"));
    assert!(r.code >= 500, "{r:?}");
}
