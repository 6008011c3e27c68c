//! Tenant stores and the tenant HTTP API against real peers: swaks through
//! the MX and submission listeners, the capture transport, a real clamd,
//! and reqwest against the running `serve`.

mod api_client;
mod clamav;
mod common;

use std::path::PathBuf;

use api_client::*;
use common::*;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The dev tenant's fixed key (README, "Tenant store and HTTP API").
const DEV_API_KEY: &str = "ssk_dev_local_only_0000000000000000";

/// Delivers a swaks message to the MX listener with extra headers.
fn mx_send(s: &Sesame, from: &str, to: &str, headers: &[&str], extra: &[String]) -> String {
    let mut args: Vec<String> = ["--server", &s.server_arg("mx"), "--from", from, "--to", to]
        .iter()
        .map(|a| a.to_string())
        .collect();
    for h in headers {
        args.extend(["--header".to_string(), h.to_string()]);
    }
    args.extend(extra.iter().cloned());
    swaks_owned(&args).expect_accepted()
}

/// Submits through the submission listener (captured) with extra headers.
fn submit(s: &Sesame, acct: &Account, from: &str, to: &str, headers: &[&str]) -> String {
    let mut args = submit_args(s, acct, from, to);
    for h in headers {
        args.extend(["--header".to_string(), h.to_string()]);
    }
    swaks_owned(&args).expect_accepted()
}

fn ids_of(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not an array: {list}"))
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

fn text(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_string()
}

/// The "done" scenario: the tenant writes (submission, captured), the
/// customer answers on MX, the tenant answers back; replies with
/// References missing, and with no threading headers at all, join by what
/// they have; and the thread reads in conversation order.
#[test]
fn a_conversation_in_both_directions_reads_as_one_thread() {
    let s = Sesame::start(Options::new().extra(API_CONFIG));
    let acct = s.account("acme", "acme.test", true);
    let key = create_api_key(&s, "acme");
    let api = Api::of(&s);
    let customer = "customer@example.net";

    let sent = submit(&s, &acct, "app@acme.test", customer, &["Subject: Order 42"]);
    let m1 = api.wait_message(&s, &key, &sent);
    assert_eq!(m1["direction"], "captured", "{m1}");
    let sent_mid = text(&m1["messageId"]);
    assert_eq!(sent_mid, format!("{sent}@{HOSTNAME}"));
    let thread = text(&m1["threadId"]);

    let answer = mx_send(
        &s,
        customer,
        "app@acme.test",
        &[
            "Subject: Re: Order 42",
            "Message-Id: <r1@example.net>",
            &format!("In-Reply-To: <{sent_mid}>"),
            &format!("References: <{sent_mid}>"),
        ],
        &[],
    );
    let m2 = api.wait_message(&s, &key, &answer);
    assert_eq!(m2["direction"], "inbound");
    assert_eq!(m2["threadId"], thread.as_str(), "{m2}");
    assert_eq!(m2["from"][0]["address"], customer);
    assert_eq!(m2["inReplyTo"][0], sent_mid.as_str());
    assert_eq!(m2["envelope"]["recipients"][0], "app@acme.test");
    assert!(m2["verdicts"].is_object(), "{m2}");

    let reply = submit(
        &s,
        &acct,
        "app@acme.test",
        customer,
        &[
            "Subject: Re: Order 42",
            "In-Reply-To: <r1@example.net>",
            &format!("References: <{sent_mid}> <r1@example.net>"),
        ],
    );
    let m3 = api.wait_message(&s, &key, &reply);
    assert_eq!(m3["direction"], "captured");
    assert_eq!(m3["threadId"], thread.as_str(), "{m3}");

    let no_references = mx_send(
        &s,
        customer,
        "app@acme.test",
        &[
            "Subject: Re: Order 42",
            "Message-Id: <r2@example.net>",
            "In-Reply-To: <r1@example.net>",
        ],
        &[],
    );
    let m4 = api.wait_message(&s, &key, &no_references);
    assert_eq!(m4["threadId"], thread.as_str(), "{m4}");

    let by_subject = mx_send(
        &s,
        customer,
        "app@acme.test",
        &["Subject: RE: order  42", "Message-Id: <r3@example.net>"],
        &[],
    );
    let m5 = api.wait_message(&s, &key, &by_subject);
    assert_eq!(m5["threadId"], thread.as_str(), "{m5}");

    let unrelated = mx_send(
        &s,
        customer,
        "app@acme.test",
        &["Subject: Order 42", "Message-Id: <r4@example.net>"],
        &[],
    );
    let m6 = api.wait_message(&s, &key, &unrelated);
    assert_ne!(
        m6["threadId"],
        thread.as_str(),
        "a subject without Re: starts a thread"
    );

    let t = api.json(&format!("/v1/threads/{thread}"), &key);
    assert_eq!(t["id"], thread.as_str());
    assert_eq!(
        ids_of(&t["messages"]),
        [sent.as_str(), &answer, &reply, &no_references, &by_subject]
    );
    let depths: Vec<i64> = t["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["depth"].as_i64().unwrap())
        .collect();
    assert_eq!(depths, [0, 1, 2, 2, 0]);
    assert_eq!(t["messages"][2]["parentId"], answer.as_str());

    let threads = api.json("/v1/threads", &key);
    let listed = &threads["threads"];
    assert_eq!(listed.as_array().unwrap().len(), 2, "{threads}");
    assert_eq!(listed[0]["id"], m6["threadId"], "most recent first");
    assert_eq!(listed[1]["messageCount"], 5);

    let inbound = api.json("/v1/messages?direction=inbound&subject=re:%20order", &key);
    assert_eq!(
        ids_of(&inbound["messages"]),
        [by_subject.as_str(), &no_references, &answer],
        "inbound only, newest first, subject matched ignoring case"
    );
}

/// Replies arrive before what they answer: two threads exist until the
/// message linking them arrives, then one does, under the older id; the
/// other id still resolves to it.
#[test]
fn out_of_order_arrival_merges_threads_when_the_missing_parent_arrives() {
    let s = Sesame::start(Options::new().extra(API_CONFIG));
    s.create_tenant("acme");
    s.add_identity("acme", "acme.test", true);
    let key = create_api_key(&s, "acme");
    let api = Api::of(&s);
    let send = |mid: &str, date: &str, refs: &[&str]| {
        let mut headers = vec![
            format!("Message-Id: <{mid}@ext.test>"),
            format!("Date: Mon, 02 Nov 2026 {date} +0000"),
            "Subject: Re: launch".to_string(),
        ];
        if let Some(parent) = refs.last() {
            headers.push(format!("In-Reply-To: <{parent}@ext.test>"));
        }
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        let id = mx_send(&s, "ann@ext.test", "team@acme.test", &headers, &[]);
        api.wait_message(&s, &key, &id);
        id
    };
    let r1 = send("r1", "10:05:00", &["a"]);
    let r2 = send("r2", "10:15:00", &["b"]);
    let t1 = text(&api.json(&format!("/v1/messages/{r1}"), &key)["threadId"]);
    let t2 = text(&api.json(&format!("/v1/messages/{r2}"), &key)["threadId"]);
    assert_ne!(t1, t2, "nothing links them yet");

    let b = send("b", "10:10:00", &["a"]);
    let a = send("a", "10:00:00", &[]);
    for id in [&r1, &r2, &b, &a] {
        let m = api.json(&format!("/v1/messages/{id}"), &key);
        assert_eq!(m["threadId"], t1.as_str(), "{m}");
    }
    let merged = api.json(&format!("/v1/threads/{t2}"), &key);
    assert_eq!(merged["id"], t1.as_str(), "the absorbed id resolves");
    assert_eq!(ids_of(&merged["messages"]), [a.as_str(), &r1, &b, &r2]);
    let depths: Vec<i64> = merged["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["depth"].as_i64().unwrap())
        .collect();
    assert_eq!(depths, [0, 1, 1, 2]);
    let threads = api.json("/v1/threads", &key);
    assert_eq!(threads["threads"].as_array().unwrap().len(), 1, "{threads}");
    assert_eq!(threads["threads"][0]["messageCount"], 4);
}

#[track_caller]
fn assert_error(r: &api_client::Response, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.error_code(), code);
}

/// Two tenants, two keys: each sees only its own mail and events; the
/// other's ids are 404 and never its data; no key or a bad key is 401.
#[test]
fn tenants_are_isolated_by_their_api_keys() {
    let s = Sesame::start(Options::new().dev().extra(API_CONFIG));
    let acme = s.account("acme", "acme.test", true);
    let beta = s.account("beta", "beta.test", true);
    let ka = create_api_key(&s, "acme");
    let kb = create_api_key(&s, "beta");
    let api = Api::of(&s);
    let files = tempfile::tempdir().unwrap();
    let secret = files.path().join("secret.bin");
    std::fs::write(&secret, b"beta's secret attachment").unwrap();
    let attach = ["--attach".to_string(), format!("@{}", secret.display())];

    let in_a = mx_send(
        &s,
        "x@ext.test",
        "info@acme.test",
        &["Subject: for acme"],
        &[],
    );
    let in_b = mx_send(
        &s,
        "x@ext.test",
        "info@beta.test",
        &["Subject: beta private"],
        &attach,
    );
    let out_a = submit(&s, &acme, "app@acme.test", "someone@example.net", &[]);
    let out_b = submit(&s, &beta, "app@beta.test", "someone@example.net", &[]);
    api.wait_message(&s, &ka, &in_a);
    api.wait_message(&s, &ka, &out_a);
    let mb = api.wait_message(&s, &kb, &in_b);
    api.wait_message(&s, &kb, &out_b);
    let beta_thread = text(&mb["threadId"]);

    for path in [
        format!("/v1/messages/{in_b}"),
        format!("/v1/messages/{in_b}/raw"),
        format!("/v1/messages/{in_b}/attachments/0"),
        format!("/v1/messages/{out_b}"),
        format!("/v1/threads/{beta_thread}"),
    ] {
        let r = api.get(&path, Some(&ka));
        assert_error(&r, 404, "not_found");
        let body = String::from_utf8_lossy(&r.body);
        assert!(
            !body.contains("beta private") && !body.contains("secret attachment"),
            "{path}: {body}"
        );
    }
    let mut listed_a = ids_of(&api.json("/v1/messages", &ka)["messages"]);
    listed_a.sort();
    let mut want = vec![in_a.clone(), out_a.clone()];
    want.sort();
    assert_eq!(listed_a, want);
    assert_eq!(
        api.json("/v1/threads", &kb)["threads"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let events = api.json("/v1/events", &ka);
    let event_ids: Vec<String> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| text(&e["messageId"]))
        .collect();
    assert!(event_ids.contains(&out_a), "{events}");
    assert!(!event_ids.contains(&out_b), "{events}");
    let sends = api.json(&format!("/v1/events?message={out_b}"), &kb);
    assert_eq!(sends["events"][0]["event"]["eventType"], "Send", "{sends}");

    for authorization in [
        None,
        Some("Bearer ".to_string()),
        Some("Bearer ssk_not_a_key".to_string()),
        Some(format!("Basic {ka}")),
        Some(format!("Bearer {}x", kb)),
    ] {
        let r = api.get_with(&format!("/v1/messages/{in_a}"), authorization.clone());
        assert_error(&r, 401, "unauthorized");
        assert_eq!(r.header("www-authenticate"), "Bearer", "{authorization:?}");
    }
    // The dev key reads the dev tenant, and nothing else.
    assert_eq!(
        api.json("/v1/messages", DEV_API_KEY)["messages"],
        serde_json::json!([])
    );
    assert_error(
        &api.get(&format!("/v1/messages/{in_a}"), Some(DEV_API_KEY)),
        404,
        "not_found",
    );
    assert!(
        s.logs().contains(DEV_API_KEY),
        "the dev key is printed at start"
    );

    let keys = s.cli_ok(&["apikey", "list", "acme", "--json"]);
    assert!(
        !keys.contains(&ka[4..]),
        "apikey list shows no secret: {keys}"
    );
    assert_eq!(
        serde_json::from_str::<Value>(&keys)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );

    for (path, code) in [
        ("/v1/messages?limit=0", "invalid_parameter"),
        ("/v1/messages?direction=sideways", "invalid_parameter"),
        ("/v1/messages?cursor=zzzz", "invalid_parameter"),
        ("/v1/messages?since=yesterday", "invalid_parameter"),
        ("/v1/messages?sender=x", "invalid_parameter"),
    ] {
        assert_error(&api.get(path, Some(&ka)), 400, code);
    }
    assert_error(&api.get("/v2/nothing", Some(&ka)), 404, "not_found");
    let doc = api.get("/openapi.json", None);
    assert_eq!(doc.status, 200);
    let doc = doc.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["paths"]["/v1/messages/{id}/attachments/{n}"]["get"].is_object());
}

/// Deterministic incompressible bytes.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

fn find_attachment(message: &Value, filename: &str) -> Value {
    message["attachments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["filename"] == filename)
        .unwrap_or_else(|| panic!("no attachment {filename}: {message}"))
        .clone()
}

/// Attachments download byte-for-byte as swaks attached them, the raw
/// message equals what was queued, and a redelivery after a crash between
/// the store write and the queue update does not store the message twice.
#[test]
fn attachments_and_raw_download_exactly_and_redelivery_stores_once() {
    let mut s = Sesame::start(Options::new().extra(API_CONFIG));
    s.create_tenant("acme");
    s.add_identity("acme", "acme.test", true);
    let key = create_api_key(&s, "acme");
    let files = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| -> PathBuf {
        let path = files.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let data = noise(300_000, 42);
    let report = noise(4_000, 7);
    let data_path = write("data.bin", &data);
    let report_path = write("report.pdf", &report);
    let id = mx_send(
        &s,
        "x@ext.test",
        "info@acme.test",
        &["Subject: files"],
        &[
            "--attach".into(),
            format!("@{}", data_path.display()),
            "--attach-type".into(),
            "application/pdf".into(),
            "--attach".into(),
            format!("@{}", report_path.display()),
        ],
    );
    let api = Api::of(&s);
    let m = api.wait_message(&s, &key, &id);
    for (name, bytes, content_type) in [
        ("data.bin", &data, "application/octet-stream"),
        ("report.pdf", &report, "application/pdf"),
    ] {
        let meta = find_attachment(&m, name);
        assert_eq!(meta["size"], bytes.len(), "{meta}");
        assert_eq!(meta["sha256"], hex::encode(Sha256::digest(bytes)), "{meta}");
        assert_eq!(meta["contentType"], content_type, "{meta}");
        assert_eq!(meta["removed"], false);
        let r = api.get(
            &format!("/v1/messages/{id}/attachments/{}", meta["index"]),
            Some(&key),
        );
        assert_eq!(r.status, 200);
        assert!(r.body == *bytes, "{name} differs from what swaks attached");
        assert_eq!(r.header("content-type"), content_type);
        assert_eq!(
            r.header("content-disposition"),
            format!("attachment; filename=\"{name}\"")
        );
    }
    assert_error(
        &api.get(&format!("/v1/messages/{id}/attachments/9"), Some(&key)),
        404,
        "not_found",
    );
    assert_error(
        &api.get(&format!("/v1/messages/{id}/attachments/x"), Some(&key)),
        400,
        "invalid_parameter",
    );

    let raw = api.get(&format!("/v1/messages/{id}/raw"), Some(&key));
    assert_eq!(raw.status, 200);
    assert_eq!(raw.header("content-type"), "message/rfc822");
    assert_eq!(
        String::from_utf8(raw.body).unwrap(),
        s.cli_ok(&["queue", "show", &id])
    );
    assert_eq!(s.log.count(&format!("stored {id}")), 1);

    // A crash after the store write, before the queue recorded it: the
    // recipient is still in flight, and the next start delivers again.
    s.stop();
    sqlite3(
        &s.data_dir.join("queue.db"),
        "UPDATE queue_recipients SET status = 'inflight';",
    );
    s.restart();
    assert!(
        s.log
            .wait_for(|l| l.matches(&format!("stored {id}")).count() == 2),
        "not redelivered:\n{}",
        s.logs()
    );
    let api = Api::of(&s);
    let listed = api.json("/v1/messages", &key);
    assert_eq!(
        ids_of(&listed["messages"]),
        [id.as_str()],
        "stored once: {listed}"
    );
    let again = api.json(&format!("/v1/messages/{id}"), &key);
    assert_eq!(again["threadId"], m["threadId"]);
    assert_eq!(again["attachments"], m["attachments"]);
}

/// An infected attachment (EICAR, real clamd) was stripped before
/// queueing; the stored message still lists it with its FAIL verdict.
#[test]
fn an_infected_attachment_keeps_its_fail_verdict_in_the_store() {
    let clamd = clamav::Clamd::start();
    let s = Sesame::start(Options::new().extra(API_CONFIG).extra(&format!(
        "[scan]\nenabled = true\nclamd = {:?}\ntimeout_secs = 20\n",
        clamd.url()
    )));
    s.create_tenant("acme");
    s.add_identity("acme", "acme.test", true);
    let key = create_api_key(&s, "acme");
    let files = tempfile::tempdir().unwrap();
    let eicar = files.path().join("eicar.com");
    std::fs::write(&eicar, clamav::EICAR).unwrap();
    let clean = files.path().join("clean.bin");
    let clean_bytes = noise(5_000, 3);
    std::fs::write(&clean, &clean_bytes).unwrap();
    let id = mx_send(
        &s,
        "x@ext.test",
        "info@acme.test",
        &["Subject: invoice"],
        &[
            "--attach".into(),
            format!("@{}", eicar.display()),
            "--attach".into(),
            format!("@{}", clean.display()),
        ],
    );
    let api = Api::of(&s);
    let m = api.wait_message(&s, &key, &id);
    assert_eq!(m["verdicts"]["virusVerdict"]["status"], "FAIL", "{m}");
    let infected = find_attachment(&m, "eicar.com");
    assert_eq!(infected["virusVerdict"], "FAIL", "{infected}");
    assert_eq!(infected["signature"], clamav::EICAR_SIGNATURE);
    assert_eq!(infected["removed"], true);
    assert_eq!(
        infected["sha256"],
        hex::encode(Sha256::digest(clamav::EICAR))
    );
    let r = api.get(
        &format!("/v1/messages/{id}/attachments/{}", infected["index"]),
        Some(&key),
    );
    assert_error(&r, 410, "attachment_removed");
    let passed = find_attachment(&m, "clean.bin");
    assert_eq!(passed["virusVerdict"], "PASS", "{passed}");
    let r = api.get(
        &format!("/v1/messages/{id}/attachments/{}", passed["index"]),
        Some(&key),
    );
    assert!(r.status == 200 && r.body == clean_bytes);
}
