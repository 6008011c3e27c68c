//! Attachment scanning against a real clamd started by the tests: EICAR
//! plain, base64, zipped and in nested messages, our own body signature,
//! clean and oversize parts, clamd stopped and stalled, the per-tenant
//! policy, the notifications (event, mail, webhook) and `sesame status`.

mod clamav;
mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use clamav::*;
use common::*;
use serde_json::Value;

const TEMPFAIL: &str = "451 4.7.0 Temporary service failure";
const NOTIFY: &str = "security@ops.test";
const FROM: &str = "app@acme.test";
const TO: &str = "someone@example.net";

/// `[scan]` for a test config; `extra` holds more keys.
fn scan_section(clamd: &str, extra: &str) -> String {
    // Generous, so that a loaded test machine never looks like a stalled clamd.
    let timeout = if extra.contains("timeout_secs") {
        ""
    } else {
        "timeout_secs = 20\n"
    };
    format!("[scan]\nenabled = true\nclamd = {clamd:?}\n{timeout}{extra}\n")
}

/// sesame with scanning against `clamd`, and tenant acme (production) with
/// a credential.
fn gateway(clamd: &str, extra: &str) -> (Sesame, Account) {
    let s = Sesame::start(Options::new().extra(&scan_section(clamd, extra)));
    let acct = s.account("acme", "acme.test", true);
    (s, acct)
}

/// Files to attach, in a temp dir.
struct Files(tempfile::TempDir);

impl Files {
    fn new() -> Files {
        Files(tempfile::tempdir().unwrap())
    }
    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }
    fn eicar(&self) -> PathBuf {
        self.write("eicar.com", EICAR.as_bytes())
    }
    /// eicar.com zipped with the zip CLI.
    fn eicar_zip(&self) -> PathBuf {
        let inner = self.eicar();
        let zip = self.0.path().join("eicar.zip");
        let st = std::process::Command::new("zip")
            .args(["-j", "-q"])
            .arg(&zip)
            .arg(&inner)
            .status()
            .unwrap_or_else(|e| panic!("zip is not installed ({e}): apt-get install -y zip"));
        assert!(st.success(), "zip failed");
        zip
    }
}

/// Deterministic incompressible bytes (xorshift), so no test depends on rand.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

/// The first base64 line swaks writes for `bytes` (to look for in bodies).
fn b64_head(bytes: &[u8]) -> String {
    let encoded = B64.encode(bytes);
    encoded[..encoded.len().min(60)].to_string()
}

/// Authenticated submission through swaks with `extra` arguments.
fn submit(s: &Sesame, acct: &Account, extra: &[&str]) -> Swaks {
    let mut args = submit_args(s, acct, FROM, TO);
    args.extend(extra.iter().map(|a| a.to_string()));
    swaks_owned(&args)
}

fn attach(path: &Path) -> [String; 2] {
    ["--attach".into(), format!("@{}", path.display())]
}

fn submit_attachments(s: &Sesame, acct: &Account, files: &[&Path]) -> Swaks {
    let args: Vec<String> = files.iter().flat_map(|f| attach(f)).collect();
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    submit(s, acct, &refs)
}

/// A hand-written message (CRLF) sent to the MX listener with swaks --data.
fn deliver_mx(s: &Sesame, files: &Files, message: &str) -> Swaks {
    let path = files.write("message.eml", message.replace('\n', "\r\n").as_bytes());
    swaks(&[
        "--server",
        &s.server_arg("mx"),
        "--from",
        "sender@external.test",
        "--to",
        "info@acme.test",
        "--data",
        &format!("@{}", path.display()),
    ])
}

fn verdict_headers(body: &str) -> Vec<&str> {
    let headers = &body[..body.find("\r\n\r\n").unwrap_or(body.len())];
    headers
        .lines()
        .filter(|l| {
            l.to_ascii_lowercase()
                .starts_with("x-sesame-virus-verdict:")
        })
        .collect()
}

fn events(s: &Sesame, tenant: &str, id: &str) -> Vec<Value> {
    match s.cli_json(&["events", "list", tenant, "--message", id, "--json"]) {
        Value::Array(a) => a,
        other => panic!("events list --json is not an array: {other}"),
    }
}

/// The notification mail queued about message `id`.
fn notification_mail(s: &Sesame, id: &str) -> String {
    let entry = s
        .queue()
        .into_iter()
        .filter(|e| e["tenant"] == "@system")
        .find(|e| {
            let nid = e["message_id"].as_str().unwrap();
            s.queued_body(nid).contains(id)
        })
        .unwrap_or_else(|| panic!("no notification mail about {id} in {:?}", s.queue()));
    assert_eq!(str_list(&entry, "recipients"), vec![NOTIFY], "{entry}");
    assert_eq!(entry["from"], "postmaster@mx.sesame.test", "{entry}");
    assert_eq!(entry["direction"], "outbound", "{entry}");
    s.queued_body(entry["message_id"].as_str().unwrap())
}

/// Done means, part 1: swaks sends EICAR as a base64 attachment; the queued
/// message has a notice in its place, says FAIL, and the operator hears
/// about it through an event, a mail and a webhook POST (retried after a
/// 503).
#[test]
fn eicar_attachment_is_stripped_and_every_notification_goes_out() {
    let clamd = Clamd::start();
    let (hook, posts) = webhook_server(&[503, 200]);
    let (s, acct) = gateway(
        &clamd.url(),
        &format!("notify_email = {NOTIFY:?}\nnotify_webhook = {hook:?}"),
    );
    let files = Files::new();
    let out = submit_attachments(&s, &acct, &[&files.eicar()]);
    let id = out.expect_accepted();

    let body = s.queued_body(&id);
    assert!(!body.contains(&b64_head(EICAR.as_bytes())), "{body}");
    assert!(!body.contains("EICAR-STANDARD"), "{body}");
    assert!(body.contains("This attachment was removed by sesame because it contains malware."));
    assert!(body.contains(&format!(
        "File: eicar.com\r\nSignature: {EICAR_SIGNATURE}\r\n"
    )));
    assert_eq!(verdict_headers(&body), vec!["X-Sesame-Virus-Verdict: FAIL"]);

    let ev = events(&s, "acme", &id);
    assert_eq!(ev.len(), 1, "{ev:?}");
    let e = &ev[0]["event"];
    assert_eq!(e["eventType"], "VirusDetected", "{e}");
    assert_eq!(e["mail"]["messageId"], id.as_str());
    assert_eq!(e["mail"]["source"], FROM);
    assert_eq!(e["mail"]["destination"], serde_json::json!([TO]));
    assert_eq!(e["mail"]["commonHeaders"]["to"], serde_json::json!([TO]));
    assert_eq!(
        e["mail"]["tags"]["ses:from-domain"],
        serde_json::json!(["acme.test"])
    );
    let d = &e["virusDetected"];
    assert_eq!(d["direction"], "outbound");
    assert_eq!(d["action"], "stripped");
    assert_eq!(d["virusVerdict"]["status"], "FAIL");
    let att = &d["attachments"][0];
    assert_eq!(att["filename"], "eicar.com", "{d}");
    assert_eq!(att["verdict"], "FAIL");
    assert_eq!(att["signature"], EICAR_SIGNATURE);
    assert_eq!(att["size"], 68);
    assert_eq!(
        att["sha256"],
        "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f"
    );

    let mail = notification_mail(&s, &id);
    assert!(
        mail.contains("Auto-Submitted: auto-generated\r\n"),
        "{mail}"
    );
    assert!(mail.contains("Tenant:     acme\r\n"), "{mail}");
    assert!(mail.contains("Direction:  outbound\r\n"), "{mail}");
    assert!(mail.contains(&format!("Sender:     {FROM}\r\n")), "{mail}");
    assert!(
        mail.contains("eicar.com (application/octet-stream, 68 bytes"),
        "{mail}"
    );
    assert!(
        mail.contains(&format!("Signature: {EICAR_SIGNATURE}")),
        "{mail}"
    );

    let first = posts.recv_timeout(PATIENCE).expect("webhook POST");
    let second = posts
        .recv_timeout(PATIENCE)
        .expect("webhook retry after 503");
    assert_eq!(first.body, second.body);
    assert_eq!(second.path, "/hooks/virus?token=secret");
    assert_eq!(second.content_type, "application/json");
    let n = &second.body;
    assert_eq!(n["notificationType"], "VirusDetected", "{n}");
    assert_eq!(n["tenant"], "acme");
    assert_eq!(n["direction"], "outbound");
    assert_eq!(n["messageId"], id.as_str());
    assert_eq!(n["sender"], FROM);
    assert_eq!(n["detections"][0]["filename"], "eicar.com");
    assert_eq!(n["detections"][0]["signature"], EICAR_SIGNATURE);
    assert!(
        s.log
            .wait_for(|l| l.contains("webhook notification delivered"))
    );

    let logs = s.logs();
    assert!(
        logs.lines().any(|l| l.contains("virus detected")
            && l.contains("filename=eicar.com")
            && l.contains(EICAR_SIGNATURE)),
        "{logs}"
    );
    assert!(
        !logs.contains("token=secret"),
        "the webhook token leaked into the log"
    );
}

/// clamd on a unix socket (the production example's set-up).
#[test]
fn clamd_over_a_unix_socket() {
    let clamd = Clamd::start_unix();
    let (s, acct) = gateway(&clamd.url(), "");
    let status = s.cli_json(&["status", "--json"]);
    assert_eq!(status["clamd"]["reachable"], true, "{status}");
    let files = Files::new();
    let id = submit_attachments(&s, &acct, &[&files.eicar()]).expect_accepted();
    assert!(s.queued_body(&id).contains("File: eicar.com"));
}

/// Done means, part 2: a zipped EICAR (clamd looks inside the zip).
#[test]
fn zipped_eicar_is_stripped() {
    let clamd = Clamd::start();
    let (s, acct) = gateway(&clamd.url(), "");
    let files = Files::new();
    let zip = files.eicar_zip();
    let id = submit_attachments(&s, &acct, &[&zip]).expect_accepted();
    let body = s.queued_body(&id);
    assert!(
        !body.contains(&b64_head(&std::fs::read(&zip).unwrap())),
        "{body}"
    );
    assert!(body.contains(&format!(
        "File: eicar.zip\r\nSignature: {EICAR_SIGNATURE}\r\n"
    )));
    assert_eq!(verdict_headers(&body), vec!["X-Sesame-Virus-Verdict: FAIL"]);
}

/// EICAR as an unencoded (7bit) text attachment, arriving on MX: inbound
/// mail is scanned too, and text sent as a file is scanned like a file.
#[test]
fn plain_eicar_attachment_on_mx_is_stripped() {
    let clamd = Clamd::start();
    let (s, _) = gateway(&clamd.url(), "");
    let files = Files::new();
    let message = format!(
        "From: <sender@external.test>\nTo: <info@acme.test>\nSubject: plain\nMIME-Version: 1.0\n\
         Content-Type: multipart/mixed; boundary=\"b1\"\n\n--b1\nContent-Type: text/plain\n\n\
         Hello, see the file.\n--b1\nContent-Type: text/plain\n\
         Content-Disposition: attachment; filename=\"eicar.txt\"\n\n{EICAR}\n--b1--\n"
    );
    let id = deliver_mx(&s, &files, &message).expect_accepted();
    let body = s.queued_body(&id);
    assert!(!body.contains("EICAR-STANDARD"), "{body}");
    assert!(body.contains("Hello, see the file."), "{body}");
    assert!(body.contains(&format!("File: eicar.txt\r\nSignature: {EICAR_SIGNATURE}")));
    let ev = events(&s, "acme", &id);
    assert_eq!(ev[0]["event"]["virusDetected"]["direction"], "inbound");
    assert_eq!(
        ev[0]["event"]["mail"]["destination"],
        serde_json::json!(["info@acme.test"])
    );
}

/// A forwarded message (message/rfc822) with EICAR attached inside: only
/// the inner attachment goes; the forwarded message's text stays.
#[test]
fn eicar_inside_a_nested_message_is_stripped() {
    let clamd = Clamd::start();
    let (s, _) = gateway(&clamd.url(), "");
    let files = Files::new();
    let message = format!(
        "From: <fwd@external.test>\nTo: <info@acme.test>\nSubject: Fwd: invoice\nMIME-Version: 1.0\n\
         Content-Type: multipart/mixed; boundary=\"outer\"\n\n--outer\nContent-Type: text/plain\n\n\
         See the forwarded message.\n--outer\nContent-Type: message/rfc822\n\
         Content-Disposition: attachment; filename=\"forwarded.eml\"\n\n\
         From: someone@else.test\nSubject: invoice\nMIME-Version: 1.0\n\
         Content-Type: multipart/mixed; boundary=\"inner\"\n\n--inner\nContent-Type: text/plain\n\n\
         Please find the invoice attached.\n--inner\n\
         Content-Type: application/octet-stream; name=\"invoice.com\"\n\
         Content-Disposition: attachment; filename=\"invoice.com\"\n\
         Content-Transfer-Encoding: base64\n\n{}\n--inner--\n--outer--\n",
        B64.encode(EICAR)
    );
    let id = deliver_mx(&s, &files, &message).expect_accepted();
    let body = s.queued_body(&id);
    assert!(!body.contains(&B64.encode(EICAR)), "{body}");
    assert!(body.contains("See the forwarded message."));
    assert!(body.contains("Please find the invoice attached."));
    assert!(body.contains("Subject: invoice\r\n"));
    assert!(body.contains(&format!(
        "File: invoice.com\r\nSignature: {EICAR_SIGNATURE}"
    )));
}

/// Our own .ndb body signature, inside a base64-encoded forwarded message:
/// the inner offsets do not exist in the raw message, so the whole
/// forwarded message is replaced by the notice.
#[test]
fn body_signature_in_an_encoded_forward_removes_the_forward() {
    let clamd = Clamd::start();
    let (s, _) = gateway(&clamd.url(), "");
    let files = Files::new();
    let inner = format!(
        "From: someone@else.test\r\nSubject: notes\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"in\"\r\n\r\n--in\r\n\
         Content-Type: text/plain\r\n\r\nnothing here\r\n--in\r\n\
         Content-Type: application/octet-stream; name=\"tool.bin\"\r\n\
         Content-Disposition: attachment; filename=\"tool.bin\"\r\n\r\n\
         header {BODY_MARKER} trailer\r\n--in--\r\n"
    );
    let encoded = B64.encode(inner.as_bytes());
    let wrapped: Vec<&str> = encoded
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let message = format!(
        "From: <fwd@external.test>\nTo: <info@acme.test>\nSubject: Fwd\nMIME-Version: 1.0\n\
         Content-Type: multipart/mixed; boundary=\"outer\"\n\n--outer\nContent-Type: text/plain\n\n\
         Forwarding.\n--outer\nContent-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\n\
         {}\n--outer--\n",
        wrapped.join("\n")
    );
    let id = deliver_mx(&s, &files, &message).expect_accepted();
    let body = s.queued_body(&id);
    assert!(!body.contains(wrapped[0]), "{body}");
    assert!(body.contains("Forwarding."));
    assert!(
        body.contains(&format!("File: tool.bin\r\nSignature: {BODY_SIGNATURE}")),
        "{body}"
    );
    assert_eq!(verdict_headers(&body), vec!["X-Sesame-Virus-Verdict: FAIL"]);
}

/// Two attachments, one infected: the clean one arrives byte for byte.
#[test]
fn only_the_infected_one_of_two_attachments_goes() {
    let clamd = Clamd::start();
    let (s, acct) = gateway(&clamd.url(), "");
    let files = Files::new();
    let report = noise(3000, 7);
    let clean = files.write("report.pdf", &report);
    let id = submit_attachments(&s, &acct, &[&clean, &files.eicar()]).expect_accepted();
    let body = s.queued_body(&id);
    let encoded = B64.encode(&report);
    for line in encoded.as_bytes().chunks(76) {
        assert!(
            body.contains(std::str::from_utf8(line).unwrap()),
            "clean attachment damaged"
        );
    }
    assert!(body.contains("filename=report.pdf") || body.contains("filename=\"report.pdf\""));
    assert!(!body.contains(&B64.encode(EICAR)[..60]));
    assert_eq!(body.matches("This attachment was removed").count(), 1);
    let ev = events(&s, "acme", &id);
    let parts = ev[0]["event"]["virusDetected"]["attachments"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(parts.len(), 2, "{parts:?}");
    assert_eq!(parts[0]["verdict"], "PASS");
    assert_eq!(parts[1]["verdict"], "FAIL");
}

/// A clean 10 MB attachment passes intact and is tagged PASS.
#[test]
fn clean_ten_megabyte_attachment_passes() {
    let clamd = Clamd::start();
    let (s, acct) = gateway(&clamd.url(), "");
    let files = Files::new();
    let data = noise(10 * 1024 * 1024, 11);
    let big = files.write("big.bin", &data);
    let id = submit_attachments(&s, &acct, &[&big]).expect_accepted();
    let body = s.queued_body(&id);
    assert_eq!(verdict_headers(&body), vec!["X-Sesame-Virus-Verdict: PASS"]);
    let encoded = B64.encode(&data);
    assert!(body.contains(&encoded[..76]));
    assert!(body.contains(&encoded[encoded.len() - 40..]));
    // Only delivery events (Send, Delivery): nothing about malware.
    assert!(
        events(&s, "acme", &id)
            .iter()
            .all(|e| ["Send", "Delivery"].contains(&e["event_type"].as_str().unwrap_or(""))),
        "{:?}",
        events(&s, "acme", &id)
    );
}

/// A part over scan.max_part_bytes is never called clean: refused with a
/// precise 552 by default, or queued and tagged when so configured.
#[test]
fn oversize_parts_follow_the_oversize_policy() {
    let clamd = Clamd::start();
    let files = Files::new();
    let big = files.write("big.bin", &noise(200_000, 3));

    let (s, acct) = gateway(&clamd.url(), "max_part_bytes = 100000");
    let out = submit_attachments(&s, &acct, &[&big]);
    out.assert_reply(
        "552 5.3.4 Message rejected: attachment \"big.bin\" is too large to scan for viruses (200000 bytes)",
    );
    assert!(s.queue().is_empty());

    let (s, acct) = gateway(
        &clamd.url(),
        "max_part_bytes = 100000\noversize = \"accept-and-tag\"",
    );
    let id = submit_attachments(&s, &acct, &[&big]).expect_accepted();
    assert_eq!(
        verdict_headers(&s.queued_body(&id)),
        vec![
            "X-Sesame-Virus-Verdict: PROCESSING_FAILED (big.bin: 200000 bytes, over the 100000-byte scan limit)"
        ]
    );
}

/// `tenant set --on-infected reject`: 554 with the signature, a Reject event
/// with SES's reason, and nothing queued (except the operator's mail).
#[test]
fn a_tenant_that_rejects_gets_554_and_a_reject_event() {
    let clamd = Clamd::start();
    let (s, acct) = gateway(&clamd.url(), &format!("notify_email = {NOTIFY:?}"));
    let tenant = s.cli_json(&["tenant", "set", "acme", "--on-infected", "reject"]);
    assert_eq!(tenant["on_infected"], "reject", "{tenant}");
    let files = Files::new();
    let out = submit_attachments(&s, &acct, &[&files.eicar()]);
    out.assert_reply(&format!(
        "554 5.7.1 Message rejected: virus detected ({EICAR_SIGNATURE})"
    ));
    assert!(s.queue().iter().all(|e| e["tenant"] == "@system"));
    let all = s.cli_json(&["events", "list", "acme", "--json"]);
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 2, "{all:?}");
    let id = all[0]["message_id"].as_str().unwrap().to_string();
    assert_eq!(all[0]["event_type"], "VirusDetected");
    assert_eq!(all[0]["event"]["virusDetected"]["action"], "rejected");
    assert_eq!(all[1]["event_type"], "Reject");
    assert_eq!(all[1]["event"]["reject"]["reason"], "Bad content");
    assert_eq!(all[1]["event"]["mail"]["messageId"], id.as_str());
    assert!(notification_mail(&s, &id).contains("Action:     rejected"));

    // Back to the configured default (strip).
    let tenant = s.cli_json(&["tenant", "set", "acme", "--on-infected", "default"]);
    assert!(tenant.get("on_infected").is_none(), "{tenant}");
    submit_attachments(&s, &acct, &[&files.eicar()]).expect_accepted();
}

/// One SMTP reply answers every receiving tenant: if one of them rejects
/// infected mail, the message is rejected.
#[test]
fn inbound_for_two_tenants_follows_the_strictest() {
    let clamd = Clamd::start();
    let (s, _) = gateway(&clamd.url(), "");
    s.create_tenant("beta");
    s.add_identity("beta", "beta.test", true);
    s.cli_ok(&["tenant", "set", "beta", "--on-infected", "reject"]);
    let files = Files::new();
    let eicar = files.eicar();
    let out = swaks(&[
        "--server",
        &s.server_arg("mx"),
        "--from",
        "sender@external.test",
        "--to",
        "info@acme.test,info@beta.test",
        "--attach",
        &format!("@{}", eicar.display()),
    ]);
    out.assert_reply(&format!(
        "554 5.7.1 Message rejected: virus detected ({EICAR_SIGNATURE})"
    ));
    // Each tenant sees its own event, naming only its own recipients.
    for (tenant, rcpt) in [("acme", "info@acme.test"), ("beta", "info@beta.test")] {
        let all = s.cli_json(&["events", "list", tenant, "--json"]);
        let first = &all.as_array().unwrap()[0]["event"];
        assert_eq!(
            first["mail"]["destination"],
            serde_json::json!([rcpt]),
            "{first}"
        );
    }
}

/// A sender cannot forge the verdict: its header is replaced by ours.
#[test]
fn a_forged_verdict_header_is_replaced() {
    let clamd = Clamd::start();
    let (s, acct) = gateway(&clamd.url(), "");
    let files = Files::new();
    let eicar = files.eicar();
    let out = submit(
        &s,
        &acct,
        &[
            "--add-header",
            "X-Sesame-Virus-Verdict: PASS",
            "--attach",
            &format!("@{}", eicar.display()),
        ],
    );
    let id = out.expect_accepted();
    assert_eq!(
        verdict_headers(&s.queued_body(&id)),
        vec!["X-Sesame-Virus-Verdict: FAIL"]
    );
}

/// Done means, part 3: with clamd stopped the sender gets 451 and nothing
/// is queued; `sesame status` says so; once clamd is back the client's
/// retry goes through. Mail without attachments never needed clamd.
#[test]
fn clamd_stopped_means_451_then_the_retry_succeeds() {
    let mut clamd = Clamd::start();
    let (s, acct) = gateway(&clamd.url(), "");
    let status = s.cli_json(&["status", "--json"]);
    assert_eq!(status["clamd"]["reachable"], true, "{status}");
    assert!(
        status["clamd"]["version"]
            .as_str()
            .unwrap()
            .starts_with("ClamAV ")
    );
    assert!(status["clamd"]["latency_ms"].is_number(), "{status}");
    assert_eq!(status["scan"]["on_scanner_error"], "tempfail");

    clamd.stop();
    let files = Files::new();
    let eicar = files.eicar();
    let out = submit_attachments(&s, &acct, &[&eicar]);
    out.assert_reply(TEMPFAIL);
    assert!(s.queue().is_empty(), "{:?}", s.queue());
    let (st, stdout, stderr) = s.cli(&["status", "--json"]);
    assert!(!st.success(), "status must fail while clamd is down");
    let down: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(down["clamd"]["reachable"], false, "{down}");
    assert!(stderr.contains("unreachable"), "{stderr}");
    let text_only = submit(&s, &acct, &["--body", "no attachments here"]);
    let id = text_only.expect_accepted();
    assert_eq!(
        verdict_headers(&s.queued_body(&id)),
        vec!["X-Sesame-Virus-Verdict: PASS"]
    );

    clamd.restart();
    let id = submit_attachments(&s, &acct, &[&eicar]).expect_accepted();
    assert!(s.queued_body(&id).contains("File: eicar.com"));
}

/// A clamd that accepts and never answers: the per-message timeout fires
/// and on_scanner_error decides (451, or tagged when accept-and-tag).
#[test]
fn a_stalled_clamd_times_out_into_the_policy() {
    let stalled = format!("tcp://{}", stalled_clamd());
    let files = Files::new();
    let pdf = files.write("report.pdf", &noise(1000, 5));

    let (s, acct) = gateway(&stalled, "timeout_secs = 1");
    submit_attachments(&s, &acct, &[&pdf]).assert_reply(TEMPFAIL);
    assert!(s.queue().is_empty());
    assert!(
        s.logs().contains("clamd did not answer within 1s"),
        "{}",
        s.logs()
    );

    let (s, acct) = gateway(
        &stalled,
        "timeout_secs = 1\non_scanner_error = \"accept-and-tag\"",
    );
    let id = submit_attachments(&s, &acct, &[&pdf]).expect_accepted();
    assert_eq!(
        verdict_headers(&s.queued_body(&id)),
        vec![
            "X-Sesame-Virus-Verdict: PROCESSING_FAILED (report.pdf: clamd did not answer within 1s)"
        ]
    );
}

/// The dev set-up without clamd: a loud warning at start, and mail is
/// accepted but tagged as unscanned.
#[test]
fn no_clamd_with_accept_and_tag_warns_loudly_and_tags() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (s, acct) = gateway(
        &format!("tcp://127.0.0.1:{port}"),
        "on_scanner_error = \"accept-and-tag\"",
    );
    assert!(
        s.logs()
            .contains("CLAMD IS UNREACHABLE: ATTACHMENTS ARE NOT BEING SCANNED")
    );
    let files = Files::new();
    let id = submit_attachments(&s, &acct, &[&files.eicar()]).expect_accepted();
    let body = s.queued_body(&id);
    let tags = verdict_headers(&body);
    assert_eq!(tags.len(), 1);
    assert!(
        tags[0].starts_with(
            "X-Sesame-Virus-Verdict: PROCESSING_FAILED (eicar.com: clamd at tcp://127.0.0.1:"
        ),
        "{tags:?}"
    );
}

/// Connections to clamd are reused: five messages, one scan connection.
#[test]
fn clamd_connections_are_reused() {
    let clamd = Clamd::start();
    let (proxy, connections) = counting_proxy(clamd.addr());
    let (s, acct) = gateway(&format!("tcp://{proxy}"), "");
    let at_start = connections.load(Ordering::SeqCst);
    let files = Files::new();
    let pdf = files.write("report.pdf", &noise(5000, 9));
    for _ in 0..5 {
        submit_attachments(&s, &acct, &[&pdf]).expect_accepted();
    }
    let used = connections.load(Ordering::SeqCst) - at_start;
    // One session connection, plus at most one health probe if the
    // 10-second watch fired meanwhile.
    assert!(used <= 2, "{used} connections for 5 sequential scans");
}

/// With scanning off no verdict is claimed, and a forged one is removed.
#[test]
fn scanning_off_claims_nothing_and_removes_forgeries() {
    let s = Sesame::start(Options::new());
    let acct = s.account("acme", "acme.test", true);
    assert!(s.logs().contains("attachment scanning is disabled"));
    let id = submit(&s, &acct, &["--add-header", "X-Sesame-Virus-Verdict: PASS"]).expect_accepted();
    assert!(verdict_headers(&s.queued_body(&id)).is_empty());
}

/// Inbound DKIM is verified on the message as it arrived, before scanning
/// strips the infected part: a signed message with EICAR inside arrives on
/// MX with `dkim=pass` recorded and the part gone, while a tampered copy of
/// the same message is not a pass.
#[test]
fn inbound_dkim_is_verified_before_the_infected_part_is_stripped() {
    // The sender: a sesame without scanning that signs and publishes its keys.
    let sender = Sesame::start(
        Options::new().extra("[dns_server]\nenabled = true\nbind = \"127.0.0.1:0\"\n"),
    );
    let reloads = sender.log.count("DNS zones reloaded");
    let acct = sender.account("sender", "sender.test", true);
    // The new domain's keys are served once the zones are rebuilt.
    assert!(
        sender
            .log
            .wait_for(|t| t.matches("DNS zones reloaded").count() > reloads),
        "the sender's DNS never served sender.test:\n{}",
        sender.logs()
    );
    let files = Files::new();
    let eicar = files.eicar();
    let mut args = submit_args(&sender, &acct, "app@sender.test", "info@acme.test");
    args.extend(attach(&eicar));
    let id = swaks_owned(&args).expect_accepted();
    let (st, signed, err) = sender.cli(&["queue", "show", &id]);
    assert!(st.success(), "{err}");
    let eicar_b64 = b64_head(EICAR.as_bytes());
    assert!(
        signed.contains(&eicar_b64) && signed.contains("DKIM-Signature"),
        "{signed}"
    );

    // The receiver scans, and looks DKIM keys up in the sender's DNS.
    let clamd = Clamd::start();
    let dns = format!("[dns]\nnameservers = [\"{}\"]\n", sender.dns());
    let (receiver, _) = gateway(&clamd.url(), &format!("\n{dns}"));
    let deliver = |message: &str| {
        let path = files.write("signed.eml", message.as_bytes());
        swaks(&[
            "--server",
            &receiver.server_arg("mx"),
            "--from",
            "bounce@mail.sender.test",
            "--to",
            "info@acme.test",
            "--data",
            &format!("@{}", path.display()),
        ])
        .expect_accepted()
    };
    let stored = receiver.queued_body(&deliver(&signed));
    let results = &stored[stored.find("Authentication-Results:").expect("A-R header")..];
    assert!(results.contains("dkim=pass"), "{stored}");
    assert!(results.contains("header.d=sender.test"), "{stored}");
    assert!(!stored.contains(&eicar_b64), "{stored}");
    assert!(
        stored.contains(&format!("Signature: {EICAR_SIGNATURE}")),
        "{stored}"
    );

    let tampered = signed.replacen("This is a test mailing", "This is a forged mailing", 1);
    assert_ne!(tampered, signed, "the test message text changed");
    let stored = receiver.queued_body(&deliver(&tampered));
    let results = &stored[stored.find("Authentication-Results:").expect("A-R header")..];
    assert!(
        !results.starts_with("Authentication-Results: mx.sesame.test;\r\n\tdkim=pass"),
        "{stored}"
    );
    assert!(
        !results[..results.find("\r\n\r\n").unwrap_or(results.len())].contains("dkim=pass"),
        "{stored}"
    );
}
