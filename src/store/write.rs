//! Storing one message: blobs first (idempotent, durable), then one
//! transaction for the entity, its attachments and its thread.

use rusqlite::{OptionalExtension, Transaction, params};
use serde_json::{Value, json};

use super::entity::{self, Parsed};
use super::thread::{self, Decision, Existing};
use super::{Direction, Store};

/// A message to store, as the delivery engine has it.
pub struct Incoming<'a> {
    /// The sesame (SES-shaped) message id: the idempotency key.
    pub id: &'a str,
    pub direction: Direction,
    pub mail_from: &'a str,
    pub recipients: &'a [String],
    pub received_at: i64,
    pub raw: &'a [u8],
    /// The queue entry's metadata (`scan`, and for inbound mail `receipt`,
    /// `flagged`, `rules`).
    pub meta: &'a Value,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub thread_id: String,
    /// False when the message was already stored (a redelivery).
    pub created: bool,
}

/// SES's receipt verdicts as recorded by the inbound checks; the virus
/// verdict falls back to the scan's. Absent ones are null.
fn verdicts(meta: &Value) -> Value {
    let receipt = &meta["receipt"];
    let pick = |key: &str| receipt.get(key).cloned().unwrap_or(Value::Null);
    let virus = match receipt.get("virusVerdict") {
        Some(v) => v.clone(),
        None => meta["scan"]["verdict"]
            .as_str()
            .map_or(Value::Null, |s| json!({ "status": s })),
    };
    json!({
        "spfVerdict": pick("spfVerdict"),
        "dkimVerdict": pick("dkimVerdict"),
        "dmarcVerdict": pick("dmarcVerdict"),
        "dmarcPolicy": pick("dmarcPolicy"),
        "spamVerdict": pick("spamVerdict"),
        "virusVerdict": virus,
    })
}

/// What the API shows of the parsed message, besides the columns.
fn entity_json(p: &Parsed, meta: &Value) -> Value {
    json!({
        "from": p.from,
        "to": p.to,
        "cc": p.cc,
        "replyTo": p.reply_to,
        "subject": p.subject,
        "date": p.date.map(|d| crate::control::iso8601_millis(d * 1000)),
        "messageId": p.message_id,
        "inReplyTo": p.in_reply_to,
        "references": p.references,
        "text": p.text,
        "html": p.html,
        "headers": p.headers,
        "verdicts": verdicts(meta),
        "scan": meta.get("scan").cloned().unwrap_or(Value::Null),
        "flagged": meta.get("flagged").cloned().unwrap_or(Value::Null),
        "ruleActions": meta.get("rules").cloned().unwrap_or(Value::Null),
    })
}

/// An attachment row: stored bytes, or a part the scanner removed.
struct AttachmentRow {
    filename: Option<String>,
    content_type: String,
    size: usize,
    sha256: String,
    content_id: Option<String>,
    disposition: Option<String>,
    verdict: Option<String>,
    signature: Option<String>,
    removed: bool,
}

/// Gives each attachment the scan verdict of the part with the same
/// decoded sha256, and adds a row (without bytes) for every infected part
/// that was stripped before queueing, so its FAIL stays visible.
fn attachment_rows(
    attachments: Vec<(&entity::Attachment, String)>,
    meta: &Value,
) -> Vec<AttachmentRow> {
    let mut parts: Vec<Option<&Value>> = meta["scan"]["parts"]
        .as_array()
        .map(|a| a.iter().map(Some).collect())
        .unwrap_or_default();
    let mut rows = Vec::new();
    for (a, sha) in attachments {
        let matched = parts
            .iter_mut()
            .find(|p| p.is_some_and(|p| p["sha256"] == sha.as_str()))
            .and_then(Option::take);
        rows.push(AttachmentRow {
            filename: a.filename.clone(),
            content_type: a.content_type.clone(),
            size: a.data.len(),
            sha256: sha,
            content_id: a.content_id.clone(),
            disposition: a.disposition.clone(),
            verdict: matched.and_then(|p| p["verdict"].as_str().map(str::to_string)),
            signature: matched.and_then(|p| p["signature"].as_str().map(str::to_string)),
            removed: false,
        });
    }
    for p in parts.into_iter().flatten() {
        if p["verdict"] != "FAIL" {
            continue;
        }
        let text = |k: &str| p[k].as_str().map(str::to_string);
        rows.push(AttachmentRow {
            filename: text("filename"),
            content_type: text("contentType").unwrap_or_else(|| "application/octet-stream".into()),
            size: p["size"].as_u64().unwrap_or(0) as usize,
            sha256: text("sha256").unwrap_or_default(),
            content_id: None,
            disposition: None,
            verdict: Some("FAIL".into()),
            signature: text("signature"),
            removed: true,
        });
    }
    rows
}

impl Store {
    /// Stores a message unless a message with the same sesame id is
    /// already stored. Errors leave nothing half-stored (blobs without a
    /// row are harmless and reused by the retry).
    pub fn put(&self, m: &Incoming<'_>) -> anyhow::Result<Stored> {
        if let Some(thread_id) = self.thread_of(m.id)? {
            return Ok(Stored {
                thread_id,
                created: false,
            });
        }
        let parsed = entity::parse(m.raw);
        let raw_sha = self.blobs.put(m.raw)?;
        let mut stored_attachments = Vec::new();
        for a in &parsed.attachments {
            stored_attachments.push((a, self.blobs.put(&a.data)?));
        }
        let rows = attachment_rows(stored_attachments, m.meta);

        let mut db = self.db();
        let tx = db.transaction()?;
        if let Some(thread_id) = thread_in(&tx, m.id)? {
            return Ok(Stored {
                thread_id,
                created: false,
            });
        }
        let ancestry = thread::ancestry(
            parsed.message_id.as_deref(),
            &parsed.in_reply_to,
            &parsed.references,
        );
        let (subject_key, is_reply) =
            thread::normalize_subject(parsed.subject.as_deref().unwrap_or(""));
        let keys: Vec<&String> = parsed.message_id.iter().chain(ancestry.iter()).collect();
        let mut found = Vec::new();
        for key in &keys {
            if let Some(e) = container_thread(&tx, key)? {
                found.push(e);
            }
        }
        if found.is_empty() && ancestry.is_empty() && is_reply && !subject_key.is_empty() {
            found.extend(thread_by_subject(&tx, &subject_key)?);
        }
        let decision = thread::decide(&found);
        let thread_id = match &decision {
            Decision::New => format!("thr-{}", m.id),
            Decision::Join(id) | Decision::Merge { survivor: id, .. } => id.clone(),
        };
        let mut to_search = parsed.to_search();
        for r in m.recipients {
            to_search.push(' ');
            to_search.push_str(&r.to_lowercase());
        }
        tx.execute(
            "INSERT INTO messages(id, direction, mail_from, recipients, from_search, to_search,
                subject, date, message_id, ancestry, entity, size, raw_sha256, received_at, thread_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            params![
                m.id,
                m.direction.as_str(),
                m.mail_from,
                serde_json::to_string(m.recipients)?,
                parsed.from_search(),
                to_search.trim(),
                parsed.subject,
                parsed.date,
                parsed.message_id,
                serde_json::to_string(&ancestry)?,
                entity_json(&parsed, m.meta).to_string(),
                m.raw.len() as i64,
                raw_sha,
                m.received_at,
                thread_id,
            ],
        )?;
        let seq = tx.last_insert_rowid();
        match &decision {
            Decision::New => {
                tx.execute(
                    "INSERT INTO threads(id, seq, subject, subject_key, created_at, last_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                    params![thread_id, seq, parsed.subject, subject_key, m.received_at],
                )?;
            }
            Decision::Join(_) => {}
            Decision::Merge { survivor, absorbed } => merge(&tx, survivor, absorbed)?,
        }
        tx.execute(
            "UPDATE threads SET last_at = max(last_at, ?2) WHERE id = ?1",
            params![thread_id, m.received_at],
        )?;
        for key in keys {
            tx.execute(
                "INSERT OR IGNORE INTO containers(message_id, thread_id) VALUES (?1, ?2)",
                params![key, thread_id],
            )?;
        }
        for (idx, a) in rows.iter().enumerate() {
            tx.execute(
                "INSERT INTO attachments(message_seq, idx, filename, content_type, size, sha256,
                    content_id, disposition, verdict, signature, removed)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    seq,
                    idx as i64,
                    a.filename,
                    a.content_type,
                    a.size as i64,
                    a.sha256,
                    a.content_id,
                    a.disposition,
                    a.verdict,
                    a.signature,
                    a.removed
                ],
            )?;
        }
        tx.commit()?;
        Ok(Stored {
            thread_id,
            created: true,
        })
    }

    fn thread_of(&self, id: &str) -> anyhow::Result<Option<String>> {
        let db = self.db();
        Ok(db
            .query_row("SELECT thread_id FROM messages WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?)
    }
}

fn thread_in(tx: &Transaction<'_>, id: &str) -> anyhow::Result<Option<String>> {
    Ok(tx
        .query_row("SELECT thread_id FROM messages WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .optional()?)
}

fn container_thread(tx: &Transaction<'_>, message_id: &str) -> anyhow::Result<Option<Existing>> {
    Ok(tx
        .query_row(
            "SELECT t.id, t.seq FROM containers c JOIN threads t ON t.id = c.thread_id
             WHERE c.message_id = ?1",
            [message_id],
            |r| {
                Ok(Existing {
                    id: r.get(0)?,
                    seq: r.get(1)?,
                })
            },
        )
        .optional()?)
}

/// The most recently active thread whose first subject normalizes the same.
fn thread_by_subject(tx: &Transaction<'_>, key: &str) -> anyhow::Result<Option<Existing>> {
    Ok(tx
        .query_row(
            "SELECT id, seq FROM threads WHERE subject_key = ?1 ORDER BY last_at DESC, seq DESC LIMIT 1",
            [key],
            |r| Ok(Existing { id: r.get(0)?, seq: r.get(1)? }),
        )
        .optional()?)
}

/// Re-points everything of the absorbed threads to the survivor; their ids
/// become aliases so that links a client kept still resolve.
fn merge(tx: &Transaction<'_>, survivor: &str, absorbed: &[String]) -> anyhow::Result<()> {
    for old in absorbed {
        tx.execute(
            "UPDATE containers SET thread_id = ?1 WHERE thread_id = ?2",
            params![survivor, old],
        )?;
        tx.execute(
            "UPDATE messages SET thread_id = ?1 WHERE thread_id = ?2",
            params![survivor, old],
        )?;
        tx.execute(
            "UPDATE thread_aliases SET thread_id = ?1 WHERE thread_id = ?2",
            params![survivor, old],
        )?;
        tx.execute(
            "INSERT OR REPLACE INTO thread_aliases(alias, thread_id) VALUES (?1, ?2)",
            params![old, survivor],
        )?;
        tx.execute(
            "UPDATE threads SET last_at = max(last_at, (SELECT last_at FROM threads WHERE id = ?2))
             WHERE id = ?1",
            params![survivor, old],
        )?;
        tx.execute("DELETE FROM threads WHERE id = ?1", [old])?;
    }
    Ok(())
}
