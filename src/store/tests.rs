//! The store against real SQLite and blobs in a temp dir.

use serde_json::{Value, json};

use super::*;

fn message(id: &str, extra_headers: &str, subject: &str) -> Vec<u8> {
    format!(
        "From: Ann <ann@a.test>\r\nTo: bob@b.test\r\nSubject: {subject}\r\n\
         Message-ID: <{id}@a.test>\r\n{extra_headers}Date: Wed, 27 Jan 2016 14:58:45 +0000\r\n\r\nhi\r\n"
    )
    .into_bytes()
}

fn put(store: &Store, id: &str, raw: &[u8], meta: &Value) -> Stored {
    store
        .put(&Incoming {
            id,
            direction: Direction::Inbound,
            mail_from: "ann@a.test",
            recipients: &["bob@b.test".to_string()],
            received_at: 1_700_000_000,
            raw,
            meta,
        })
        .unwrap()
}

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("t")).unwrap();
    (dir, store)
}

/// A redelivered entry (same sesame id) is not stored twice, even when its
/// bytes differ (a re-signed retry).
#[test]
fn storing_is_idempotent_per_message_id() {
    let (_dir, store) = open();
    let first = put(&store, "id-1", &message("m1", "", "hello"), &Value::Null);
    assert!(first.created);
    let again = put(
        &store,
        "id-1",
        &message("m1", "X-Retry: 1\r\n", "hello"),
        &Value::Null,
    );
    assert!(!again.created);
    assert_eq!(again.thread_id, first.thread_id);
    let page = store
        .messages(&MessageFilter {
            limit: 10,
            ..Default::default()
        })
        .unwrap()
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(
        store.raw("id-1").unwrap().unwrap(),
        message("m1", "", "hello")
    );
}

/// The reply arrives first; its parent, arriving later, joins its thread.
/// A third message that names two separate threads' roots merges them, and
/// the absorbed id keeps resolving.
#[test]
fn out_of_order_replies_share_a_thread_and_missing_parents_merge_threads() {
    let (_dir, store) = open();
    let reply = put(
        &store,
        "id-b",
        &message(
            "b",
            "In-Reply-To: <a@a.test>\r\nReferences: <a@a.test>\r\n",
            "Re: x",
        ),
        &Value::Null,
    );
    let parent = put(&store, "id-a", &message("a", "", "x"), &Value::Null);
    assert_eq!(parent.thread_id, reply.thread_id);

    let other = put(
        &store,
        "id-d",
        &message("d", "In-Reply-To: <c@a.test>\r\n", "Re: y"),
        &Value::Null,
    );
    assert_ne!(other.thread_id, reply.thread_id);
    let joining = put(
        &store,
        "id-c",
        &message("c", "References: <a@a.test>\r\n", "Re: x"),
        &Value::Null,
    );
    assert_eq!(
        joining.thread_id, reply.thread_id,
        "the oldest thread survives"
    );
    let merged = store.thread(&other.thread_id).unwrap().unwrap();
    assert_eq!(merged["id"], json!(reply.thread_id));
    let order: Vec<&str> = merged["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["id-a", "id-b", "id-c", "id-d"]);
    let threads = store.threads(10, None).unwrap().unwrap();
    assert_eq!(threads.items.len(), 1);
    assert_eq!(threads.items[0]["messageCount"], 4);
}

/// Without In-Reply-To and References, only a reply-prefixed subject joins
/// a thread; a fresh subject never does.
#[test]
fn the_subject_fallback_applies_only_without_threading_headers() {
    let (_dir, store) = open();
    let root = put(
        &store,
        "id-1",
        &message("r1", "", "Plans for Q3"),
        &Value::Null,
    );
    let reply = put(
        &store,
        "id-2",
        &message("r2", "", "RE:  plans for q3"),
        &Value::Null,
    );
    assert_eq!(reply.thread_id, root.thread_id);
    let fresh = put(
        &store,
        "id-3",
        &message("r3", "", "Plans for Q3"),
        &Value::Null,
    );
    assert_ne!(fresh.thread_id, root.thread_id);
    let unrelated = put(
        &store,
        "id-4",
        &message(
            "r4",
            "In-Reply-To: <elsewhere@x.test>\r\n",
            "Re: Plans for Q3",
        ),
        &Value::Null,
    );
    assert_ne!(
        unrelated.thread_id, root.thread_id,
        "headers win over the subject"
    );
}

/// Scan verdicts reach the attachments by sha256; a stripped infected part
/// stays listed with its FAIL, without bytes.
#[test]
fn attachments_carry_scan_verdicts_and_stripped_parts_stay_visible() {
    let (_dir, store) = open();
    let raw = b"From: a@a.test\r\nTo: b@b.test\r\nSubject: files\r\nMessage-ID: <f@a.test>\r\n\
        MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
        --b\r\nContent-Type: text/plain\r\n\r\nbody\r\n\
        --b\r\nContent-Type: application/octet-stream\r\n\
        Content-Disposition: attachment; filename=\"ok.bin\"\r\n\
        Content-Transfer-Encoding: base64\r\n\r\naGVsbG8=\r\n--b--\r\n";
    let meta = json!({"scan": {"verdict": "FAIL", "parts": [
        {"filename": "ok.bin", "contentType": "application/octet-stream", "size": 5,
         "sha256": blobs::sha256_hex(b"hello"), "verdict": "PASS"},
        {"filename": "eicar.com", "contentType": "application/octet-stream", "size": 68,
         "sha256": "ab".repeat(32), "verdict": "FAIL", "signature": "Eicar-Test-Signature"},
    ]}, "flagged": true});
    put(&store, "id-f", raw, &meta);
    let m = store.message("id-f").unwrap().unwrap();
    assert_eq!(m["verdicts"]["virusVerdict"], json!({"status": "FAIL"}));
    assert_eq!(m["verdicts"]["spfVerdict"], Value::Null);
    assert_eq!(m["flagged"], true);
    let a = m["attachments"].as_array().unwrap();
    assert_eq!(a.len(), 2, "{m}");
    assert_eq!(a[0]["filename"], "ok.bin");
    assert_eq!(a[0]["virusVerdict"], "PASS");
    assert_eq!(a[1]["filename"], "eicar.com");
    assert_eq!(a[1]["virusVerdict"], "FAIL");
    assert_eq!(a[1]["signature"], "Eicar-Test-Signature");
    assert_eq!(a[1]["removed"], true);
    assert_eq!(
        store.attachment("id-f", 0).unwrap().unwrap().data.unwrap(),
        b"hello"
    );
    assert!(store.attachment("id-f", 1).unwrap().unwrap().data.is_none());
    assert!(store.attachment("id-f", 2).unwrap().is_none());
}

/// Filters and opaque cursors page through everything exactly once.
#[test]
fn listings_filter_and_page_with_cursors() {
    let (_dir, store) = open();
    for i in 0..5 {
        put(
            &store,
            &format!("id-{i}"),
            &message(&format!("p{i}"), "", &format!("topic {i}")),
            &Value::Null,
        );
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .messages(&MessageFilter {
                limit: 2,
                cursor: cursor.clone(),
                ..Default::default()
            })
            .unwrap()
            .unwrap();
        seen.extend(
            page.items
                .iter()
                .map(|m| m["id"].as_str().unwrap().to_string()),
        );
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ["id-4", "id-3", "id-2", "id-1", "id-0"]);
    let filtered = store
        .messages(&MessageFilter {
            subject: Some("TOPIC 3".into()),
            from: Some("ann@".into()),
            to: Some("BOB@b.test".into()),
            direction: Some(Direction::Inbound),
            limit: 10,
            ..Default::default()
        })
        .unwrap()
        .unwrap();
    assert_eq!(filtered.items.len(), 1);
    let none = store
        .messages(&MessageFilter {
            direction: Some(Direction::Captured),
            limit: 10,
            ..Default::default()
        })
        .unwrap()
        .unwrap();
    assert!(none.items.is_empty());
    assert!(
        store
            .messages(&MessageFilter {
                cursor: Some("garbage!".into()),
                limit: 1,
                ..Default::default()
            })
            .unwrap()
            .is_err()
    );
}

/// Each tenant has its own directory; a name that could escape it is refused.
#[test]
fn tenants_have_separate_stores() {
    let dir = tempfile::tempdir().unwrap();
    let stores = Stores::new(dir.path());
    put(
        &stores.get("acme").unwrap(),
        "id-1",
        &message("m", "", "s"),
        &Value::Null,
    );
    assert!(
        stores
            .get("beta")
            .unwrap()
            .message("id-1")
            .unwrap()
            .is_none()
    );
    assert!(
        stores
            .get("acme")
            .unwrap()
            .message("id-1")
            .unwrap()
            .is_some()
    );
    assert!(dir.path().join("tenants/acme/store.db").exists());
    for bad in ["../acme", "@system", ""] {
        assert!(stores.get(bad).is_err(), "{bad}");
    }
}
