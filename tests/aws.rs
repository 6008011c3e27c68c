//! The AWS production adapter against moto in server mode (a real SES,
//! SQS and S3 peer on a loopback port): sending through the `ses`
//! transport, SES feedback from SQS, and inbound mail from S3 + SQS.
//! Throttling comes from a tiny local HTTP server (fault injection: moto
//! cannot be asked to throttle).

mod api_client;
mod common;
mod delivery_peers;
mod moto;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;

use api_client::{Api, create_api_key};
use common::*;
use delivery_peers::{events_of_type, recipient_state, wait_status};
use moto::{Moto, aws_env, wait_until};
use serde_json::{Value, json};

/// A sesame whose `[aws]` points at `endpoint`, with fast retries.
fn options(endpoint: &str, aws_extra: &str) -> Options {
    aws_env(Options::new().extra(&format!(
        "[delivery]\npoll_ms = 50\nretry_base_secs = 1\nretry_max_delay_secs = 2\n\n\
         [aws]\nregion = \"us-east-1\"\nendpoint_url = \"{endpoint}\"\nwait_time_secs = 1\n\
         visibility_timeout_secs = 2\n{aws_extra}\n[api]\nlisten = \"127.0.0.1:0\"\n"
    )))
}

/// Tenant `acme` (acme.test, out of the sandbox) delivering through SES.
fn ses_account(s: &Sesame) -> Account {
    let acct = s.account("acme", "acme.test", true);
    s.cli_ok(&["tenant", "set", "acme", "--delivery", "ses"]);
    acct
}

fn submit(s: &Sesame, acct: &Account, to: &str, headers: &[&str]) -> String {
    let mut args = submit_args(s, acct, "app@acme.test", to);
    for h in headers {
        args.extend(["--header".to_string(), h.to_string()]);
    }
    swaks_owned(&args).expect_accepted()
}

/// SES's MessageId, read from the `250 Ok <id>` that the transport records.
fn ses_id_of(state: &Value) -> String {
    let response = state["last_response"].as_str().unwrap_or_default();
    response
        .strip_prefix("250 Ok ")
        .unwrap_or_else(|| panic!("not an SES acceptance: {state}"))
        .to_string()
}

/// The message goes to SES as raw mail to the batch's recipients, with
/// the X-SES-* headers stripped and (with `--dkim ses`) no sesame
/// signature; SES's id is recorded and shows in the Delivery event.
#[test]
fn ses_transport_sends_raw_mail_and_records_the_ses_id() {
    let moto = Moto::start();
    moto.aws(&["verify-domain", "acme.test"], b"");
    let s = Sesame::start(options(&moto.endpoint(), ""));
    let acct = ses_account(&s);
    let tenant = s.cli_json(&["tenant", "set", "acme", "--dkim", "ses"]);
    assert_eq!(tenant["dkim_signer"], "ses");
    let id = submit(
        &s,
        &acct,
        "bob@example.net",
        &["X-SES-MESSAGE-TAGS: campaign=spring"],
    );
    let state = wait_status(&s, &id, "bob@example.net", "delivered");
    assert_eq!(state["transport"], "ses");
    let ses_id = ses_id_of(&state);

    let sent: Vec<Value> = moto
        .sent_raw_messages()
        .into_iter()
        .filter(|m| m["id"] == ses_id.as_str())
        .collect();
    assert_eq!(sent.len(), 1, "SES has the message once: {sent:?}");
    assert!(str_list(&sent[0], "destinations").contains(&"bob@example.net".to_string()));
    let raw = sent[0]["raw_data"].as_str().unwrap();
    assert!(raw.contains(&format!("Message-ID: <{id}@")), "{raw}");
    assert!(!raw.contains("X-SES-MESSAGE-TAGS"), "stripped: {raw}");
    assert!(
        !raw.contains("DKIM-Signature"),
        "SES signs, not sesame: {raw}"
    );

    let delivery = events_of_type(&s, "acme", &id, "Delivery");
    assert_eq!(delivery.len(), 1);
    assert!(
        delivery[0]["delivery"]["smtpResponse"]
            .as_str()
            .unwrap()
            .contains(&ses_id)
    );
}

/// With the default `--dkim sesame`, sesame signs what SES sends.
#[test]
fn sesame_signs_by_default_when_sending_through_ses() {
    let moto = Moto::start();
    moto.aws(&["verify-domain", "acme.test"], b"");
    let s = Sesame::start(options(&moto.endpoint(), ""));
    let acct = ses_account(&s);
    let id = submit(&s, &acct, "bob@example.net", &[]);
    let ses_id = ses_id_of(&wait_status(&s, &id, "bob@example.net", "delivered"));
    let sent = moto.sent_raw_messages();
    let raw = sent
        .iter()
        .find(|m| m["id"] == ses_id.as_str())
        .and_then(|m| m["raw_data"].as_str())
        .expect("sent through SES");
    assert!(raw.contains("DKIM-Signature: v=1"), "{raw}");
}

/// SES refuses a sender it has not verified (MessageRejected): the
/// recipient bounces at once, with a Bounce event, and is not suppressed
/// (the refusal is about the sender, not the recipient).
#[test]
fn ses_message_rejected_bounces_without_suppressing() {
    let moto = Moto::start(); // acme.test is never verified in SES
    let s = Sesame::start(options(&moto.endpoint(), ""));
    let acct = ses_account(&s);
    let id = submit(&s, &acct, "bob@example.net", &[]);
    let state = wait_status(&s, &id, "bob@example.net", "bounced");
    assert_eq!(state["attempts"], 1, "not retried: {state}");
    let response = state["last_response"].as_str().unwrap();
    assert!(response.contains("MessageRejected"), "{response}");
    let bounces = events_of_type(&s, "acme", &id, "Bounce");
    assert_eq!(bounces.len(), 1);
    assert_eq!(bounces[0]["bounce"]["bounceType"], "Permanent");
    assert_eq!(
        bounces[0]["bounce"]["bouncedRecipients"][0]["status"],
        "5.7.1"
    );
    let list = s.cli_json(&["suppression", "list", "acme", "--json"]);
    assert_eq!(list, json!([]));
    assert!(moto.sent_raw_messages().is_empty());
}

/// A local HTTP server that answers every request like a throttled SES
/// (HTTP 429, TooManyRequestsException) and counts the requests.
fn throttling_ses() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let payload = r#"{"message":"Maximum sending rate exceeded."}"#;
            let _ = write!(
                stream,
                "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n\
                 x-amzn-ErrorType: TooManyRequestsException\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{payload}",
                payload.len()
            );
        }
    });
    (url, hits)
}

/// Throttling is transient: deferred with a DeliveryDelay event, then
/// tried again by the queue.
#[test]
fn ses_throttling_is_retried_by_the_queue() {
    let (url, hits) = throttling_ses();
    let s = Sesame::start(options(&url, ""));
    let acct = ses_account(&s);
    let id = submit(&s, &acct, "bob@example.net", &[]);
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let state = recipient_state(&s, &id, "bob@example.net").unwrap_or_default();
        if state["attempts"].as_i64().unwrap_or(0) >= 2 {
            assert_eq!(state["status"], "deferred", "{state}");
            let response = state["last_response"].as_str().unwrap();
            assert!(response.contains("TooManyRequestsException"), "{response}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never retried: {state}\n{}",
            s.logs()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(hits.load(std::sync::atomic::Ordering::SeqCst) >= 2);
    let delays = events_of_type(&s, "acme", &id, "DeliveryDelay");
    assert!(!delays.is_empty());
    assert_eq!(
        delays[0]["deliveryDelay"]["delayedRecipients"][0]["status"],
        "4.4.2"
    );
}

/// An SES bounce notification (SNS-wrapped, as SNS delivers to SQS) about a
/// message sent through SES becomes a Bounce event under sesame's id and a
/// suppression entry; the notification is deleted, and so is one about a
/// message this node never sent.
#[test]
fn ses_bounce_feedback_suppresses_and_records_a_bounce_event() {
    let moto = Moto::start();
    moto.aws(&["verify-domain", "acme.test"], b"");
    let queue = moto.create_queue("ses-feedback");
    let s = Sesame::start(options(
        &moto.endpoint(),
        &format!("feedback_queue_url = \"{queue}\"\n"),
    ));
    let acct = ses_account(&s);
    let id = submit(&s, &acct, "bob@example.net", &[]);
    let ses_id = ses_id_of(&wait_status(&s, &id, "bob@example.net", "delivered"));

    let notice = |ses_id: &str| {
        let inner = json!({
            "notificationType": "Bounce",
            "bounce": {
                "bounceType": "Permanent", "bounceSubType": "General",
                "bouncedRecipients": [{"emailAddress": "bob@example.net", "action": "failed",
                    "status": "5.1.1", "diagnosticCode": "smtp; 550 5.1.1 user unknown"}],
                "timestamp": "2026-01-01T00:00:00.000Z", "feedbackId": "feedback-1",
            },
            "mail": {"messageId": ses_id, "source": "app@acme.test",
                     "destination": ["bob@example.net"], "timestamp": "2026-01-01T00:00:00.000Z"},
        });
        json!({"Type": "Notification", "MessageId": "sns-1", "Message": inner.to_string()})
            .to_string()
    };
    moto.send_message(&queue, &notice("not-sent-by-this-node"));
    moto.send_message(&queue, &notice(&ses_id));
    assert!(
        s.log.wait_for(|l| l.contains("SES feedback recorded")),
        "{}",
        s.logs()
    );
    let list = s.cli_json(&["suppression", "list", "acme", "--json"]);
    assert_eq!(list[0]["EmailAddress"], "bob@example.net", "{list}");
    assert_eq!(list[0]["Reason"], "BOUNCE");
    assert_eq!(list[0]["MessageId"], id.as_str());
    let bounces = events_of_type(&s, "acme", &id, "Bounce");
    assert_eq!(bounces.len(), 1, "{bounces:?}");
    assert_eq!(bounces[0]["mail"]["sesMessageId"], ses_id.as_str());
    assert_eq!(
        bounces[0]["bounce"]["bouncedRecipients"][0]["diagnosticCode"],
        "smtp; 550 5.1.1 user unknown"
    );
    wait_until("both notifications deleted from SQS", || {
        moto.queue_depth(&queue) == 0
    });
    assert!(
        s.log.wait_for(|l| l.contains("did not send")),
        "the unknown one is dropped: {}",
        s.logs()
    );
}

fn inbound_message() -> &'static str {
    "Return-Path: <ann@sender.test>\r\nFrom: Ann <ann@sender.test>\r\n\
     To: alice@acme.test, carol@elsewhere.test\r\nSubject: through SES\r\n\
     Message-ID: <inbound-1@sender.test>\r\n\r\nHello from S3.\r\n"
}

fn s3_event(bucket: &str, key: &str) -> String {
    json!({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": bucket}, "object": {"key": key}}}]})
    .to_string()
}

fn inbound_entries(s: &Sesame) -> Vec<Value> {
    s.queue()
        .into_iter()
        .filter(|e| e["direction"] == "inbound" && e["tenant"] == "acme")
        .collect()
}

/// An object in the tenant's bucket plus its S3 notification ends up as
/// exactly one inbound message for the tenant, also when sesame is
/// SIGKILLed between the commit and the SQS delete (the notification comes
/// back after restart) and when SES's own Received notification names the
/// same object again.
#[test]
fn s3_inbound_is_committed_once_even_when_killed_before_the_sqs_delete() {
    let moto = Moto::start();
    let queue = moto.create_queue("ses-inbound");
    moto.aws(&["create-bucket", "ses-mail"], b"");
    let key = "acme/inbound-object-1";
    moto.aws(
        &["put-object", "ses-mail", key],
        inbound_message().as_bytes(),
    );
    let mapping = format!(
        "\n[[aws.inbound]]\nqueue_url = \"{queue}\"\nbucket = \"ses-mail\"\nprefix = \"acme/\"\n\
         tenant = \"acme\"\n"
    );
    let stalling =
        options(&moto.endpoint(), &mapping).env("SESAME_FAULT_STALL_AFTER_INGEST_COMMIT", "1");
    let mut s = Sesame::start(stalling);
    s.account("acme", "acme.test", true);
    moto.send_message(&queue, &s3_event("ses-mail", key));
    assert!(
        s.log.wait_for(|l| l.contains("fault injection: stalling")),
        "{}",
        s.logs()
    );
    s.kill9();
    let committed = inbound_entries(&s);
    assert_eq!(
        committed.len(),
        1,
        "committed before the kill: {committed:?}"
    );
    let id = committed[0]["message_id"].as_str().unwrap().to_string();
    assert_eq!(str_list(&committed[0], "recipients"), ["alice@acme.test"]);
    assert_eq!(moto.queue_depth(&queue), 1, "not deleted before the kill");

    s.options
        .env
        .retain(|(k, _)| !k.starts_with("SESAME_FAULT"));
    s.restart();
    wait_until("the redelivered notification deleted", || {
        moto.queue_depth(&queue) == 0
    });
    assert!(
        s.log
            .wait_for(|l| l.matches("inbound message from S3 committed").count() == 2),
        "handled again after the restart: {}",
        s.logs()
    );
    let received = json!({
        "notificationType": "Received",
        "mail": {"messageId": "ses-inbound-1", "source": "ann@sender.test",
                 "destination": ["alice@acme.test"]},
        "receipt": {"recipients": ["alice@acme.test"],
                    "action": {"type": "S3", "bucketName": "ses-mail", "objectKey": key}},
    });
    moto.send_message(
        &queue,
        &json!({"Type": "Notification", "Message": received.to_string()}).to_string(),
    );
    assert!(
        s.log
            .wait_for(|l| l.matches("inbound message from S3 committed").count() == 3),
        "{}",
        s.logs()
    );
    let entries = inbound_entries(&s);
    assert_eq!(entries.len(), 1, "exactly once: {entries:?}");
    assert_eq!(entries[0]["message_id"], id.as_str());
    let body = s.queued_body(&id);
    assert!(body.contains("Hello from S3."), "{body}");
    assert!(body.contains("Received: from amazonses.com"), "{body}");
    // And once in the tenant's store, in a thread, readable with its key.
    let api_key = create_api_key(&s, "acme");
    let api = Api::of(&s);
    let stored = api.wait_message(&s, &api_key, &id);
    assert_eq!(stored["direction"], "inbound", "{stored}");
    let thread = stored["threadId"].as_str().expect("a thread id");
    let listed = api.json("/v1/messages?direction=inbound", &api_key);
    assert_eq!(listed["messages"].as_array().unwrap().len(), 1, "{listed}");
    let thread = api.json(&format!("/v1/threads/{thread}"), &api_key);
    assert_eq!(thread["messages"].as_array().unwrap().len(), 1, "{thread}");
}

/// An object outside every mapped bucket/prefix is refused and its
/// notification deleted, and so is garbage; the worker goes on. SES's
/// `Received` notification gives the envelope recipients (not the headers')
/// and its verdicts, which are kept with the message.
#[test]
fn s3_inbound_drops_what_it_cannot_map_and_takes_the_ses_envelope() {
    let moto = Moto::start();
    let queue = moto.create_queue("ses-inbound");
    moto.aws(&["create-bucket", "ses-mail"], b"");
    moto.aws(
        &["put-object", "ses-mail", "acme/received-1"],
        inbound_message().as_bytes(),
    );
    let mapping = format!(
        "\n[[aws.inbound]]\nqueue_url = \"{queue}\"\nbucket = \"ses-mail\"\nprefix = \"acme/\"\n\
         tenant = \"acme\"\n"
    );
    let s = Sesame::start(options(&moto.endpoint(), &mapping));
    s.account("acme", "acme.test", true);
    moto.send_message(&queue, &s3_event("other-bucket", "acme/x"));
    moto.send_message(&queue, "not a notification");
    let received = json!({
        "notificationType": "Received",
        "mail": {"messageId": "ses-inbound-2", "source": "ann@sender.test"},
        "receipt": {"recipients": ["bcc-only@acme.test"],
                    "spfVerdict": {"status": "PASS"}, "virusVerdict": {"status": "PASS"},
                    "action": {"type": "S3", "bucketName": "ses-mail", "objectKey": "acme/received-1"}},
    });
    moto.send_message(
        &queue,
        &json!({"Type": "Notification", "Message": received.to_string()}).to_string(),
    );
    assert!(
        s.log
            .wait_for(|l| l.contains("inbound message from S3 committed")),
        "{}",
        s.logs()
    );
    wait_until("all three notifications deleted", || {
        moto.queue_depth(&queue) == 0
    });
    assert!(
        s.log
            .wait_for(|l| l.contains("in no [[aws.inbound]] bucket/prefix")),
        "{}",
        s.logs()
    );
    let entries = inbound_entries(&s);
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(str_list(&entries[0], "recipients"), ["bcc-only@acme.test"]);
    let id = entries[0]["message_id"].as_str().unwrap();
    assert!(is_ses_id(id));
    let meta = sqlite3(
        &s.data_dir.join("queue.db"),
        &format!("SELECT meta FROM queue_entries WHERE message_id = '{id}';"),
    );
    let meta: Value = serde_json::from_str(meta.trim()).unwrap();
    assert_eq!(meta["ses"]["spfVerdict"], "PASS", "{meta}");
    assert_eq!(meta["ses"]["virusVerdict"], "PASS", "{meta}");
    // SES saw the client, sesame did not: SES's SPF verdict is the one kept.
    assert_eq!(meta["receipt"]["spfVerdict"]["status"], "PASS", "{meta}");
}

/// A tenant set to `ses` on a node without `[aws]` keeps its mail queued
/// (deferred, retried) instead of losing or bouncing it; no AWS call is made.
#[test]
fn ses_delivery_without_an_aws_section_keeps_the_mail_queued() {
    let s = Sesame::start(
        Options::new()
            .extra("[delivery]\npoll_ms = 50\nretry_base_secs = 1\nretry_max_delay_secs = 2\n"),
    );
    let acct = ses_account(&s);
    let id = submit(&s, &acct, "bob@example.net", &[]);
    let state = wait_status(&s, &id, "bob@example.net", "deferred");
    let response = state["last_response"].as_str().unwrap();
    assert!(
        response.contains("needs an [aws] config section"),
        "{response}"
    );
    assert!(!s.logs().contains("SQS worker started"));
}
