//! Reading a store: messages (one, or filtered pages), raw messages,
//! attachment bytes, and threads in reading order.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use rusqlite::{OptionalExtension, Row, params};
use serde_json::{Value, json};

use super::thread::{self, Node};
use super::{Direction, Store};
use crate::control::iso8601_millis;

/// `GET /v1/messages` filters. Text filters match case-insensitively
/// anywhere in the field.
#[derive(Debug, Default, Clone)]
pub struct MessageFilter {
    pub direction: Option<Direction>,
    pub from: Option<String>,
    /// Header To/Cc addresses and envelope recipients.
    pub to: Option<String>,
    pub subject: Option<String>,
    /// Unix seconds; messages received at or after.
    pub since: Option<i64>,
    pub limit: usize,
    pub cursor: Option<String>,
}

/// One page of a listing; `next` is the opaque cursor of the next page.
#[derive(Debug)]
pub struct Page {
    pub items: Vec<Value>,
    pub next: Option<String>,
}

/// An attachment to download. `data` is None for a part the scanner
/// removed (only its metadata was kept).
pub struct AttachmentFile {
    pub filename: Option<String>,
    pub content_type: String,
    pub data: Option<Vec<u8>>,
}

/// Cursors are opaque to clients: base64url of the position.
fn encode_cursor(position: &str) -> String {
    B64URL.encode(position)
}

/// The position in a cursor, or an error naming the bad cursor.
pub fn decode_cursor(cursor: &str) -> Option<Vec<i64>> {
    let bytes = B64URL.decode(cursor).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    text.split(':').map(|n| n.parse().ok()).collect()
}

const SUMMARY_COLUMNS: &str = "m.seq, m.id, m.direction, m.subject, m.entity, m.received_at, \
    m.thread_id, m.size, m.mail_from, m.recipients, \
    (SELECT count(*) FROM attachments a WHERE a.message_seq = m.seq)";

fn summary(r: &Row<'_>) -> rusqlite::Result<(i64, Value)> {
    let entity: Value = serde_json::from_str(&r.get::<_, String>(4)?).unwrap_or(Value::Null);
    let recipients: Value = serde_json::from_str(&r.get::<_, String>(9)?).unwrap_or(Value::Null);
    let received_at: i64 = r.get(5)?;
    Ok((
        r.get(0)?,
        json!({
            "id": r.get::<_, String>(1)?,
            "direction": r.get::<_, String>(2)?,
            "threadId": r.get::<_, String>(6)?,
            "from": entity["from"],
            "to": entity["to"],
            "subject": r.get::<_, Option<String>>(3)?,
            "date": entity["date"],
            "messageId": entity["messageId"],
            "receivedAt": iso8601_millis(received_at * 1000),
            "size": r.get::<_, i64>(7)?,
            "envelope": {"mailFrom": r.get::<_, String>(8)?, "recipients": recipients},
            "attachmentCount": r.get::<_, i64>(10)?,
        }),
    ))
}

impl Store {
    /// The parsed entity with envelope, verdicts and attachment metadata.
    pub fn message(&self, id: &str) -> anyhow::Result<Option<Value>> {
        let db = self.db();
        let found = db
            .query_row(
                &format!("SELECT {SUMMARY_COLUMNS} FROM messages m WHERE m.id = ?1"),
                [id],
                |r| Ok((summary(r)?, r.get::<_, String>(4)?)),
            )
            .optional()?;
        let Some(((seq, mut message), entity)) = found else {
            return Ok(None);
        };
        let mut stmt = db.prepare(
            "SELECT idx, filename, content_type, size, sha256, content_id, disposition,
                    verdict, signature, removed
             FROM attachments WHERE message_seq = ?1 ORDER BY idx",
        )?;
        let attachments = stmt
            .query_map([seq], |r| {
                Ok(json!({
                    "index": r.get::<_, i64>(0)?,
                    "filename": r.get::<_, Option<String>>(1)?,
                    "contentType": r.get::<_, String>(2)?,
                    "size": r.get::<_, i64>(3)?,
                    "sha256": r.get::<_, String>(4)?,
                    "contentId": r.get::<_, Option<String>>(5)?,
                    "disposition": r.get::<_, Option<String>>(6)?,
                    "virusVerdict": r.get::<_, Option<String>>(7)?,
                    "signature": r.get::<_, Option<String>>(8)?,
                    "removed": r.get::<_, bool>(9)?,
                }))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let entity: Value = serde_json::from_str(&entity)?;
        if let (Value::Object(m), Value::Object(e)) = (&mut message, entity) {
            m.extend(e);
            m.insert("attachments".into(), Value::Array(attachments));
            m.remove("attachmentCount");
        }
        Ok(Some(message))
    }

    /// The message exactly as it was stored.
    pub fn raw(&self, id: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let sha: Option<String> = self
            .db()
            .query_row("SELECT raw_sha256 FROM messages WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?;
        match sha {
            Some(sha) => Ok(Some(self.blobs.get(&sha)?.ok_or_else(|| {
                anyhow::anyhow!("blob {sha} of message {id} is missing")
            })?)),
            None => Ok(None),
        }
    }

    pub fn attachment(&self, id: &str, index: i64) -> anyhow::Result<Option<AttachmentFile>> {
        let row: Option<(Option<String>, String, String, bool)> = self
            .db()
            .query_row(
                "SELECT a.filename, a.content_type, a.sha256, a.removed
                 FROM attachments a JOIN messages m ON m.seq = a.message_seq
                 WHERE m.id = ?1 AND a.idx = ?2",
                params![id, index],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let Some((filename, content_type, sha, removed)) = row else {
            return Ok(None);
        };
        let data = if removed {
            None
        } else {
            Some(
                self.blobs
                    .get(&sha)?
                    .ok_or_else(|| anyhow::anyhow!("attachment blob {sha} is missing"))?,
            )
        };
        Ok(Some(AttachmentFile {
            filename,
            content_type,
            data,
        }))
    }

    /// Newest first. `Err` only for a cursor that is not ours.
    pub fn messages(&self, f: &MessageFilter) -> anyhow::Result<Result<Page, String>> {
        let before = match f.cursor.as_deref().map(decode_cursor) {
            None => i64::MAX,
            Some(Some(pos)) if pos.len() == 1 => pos[0],
            Some(_) => return Ok(Err("cursor is not one this API returned".into())),
        };
        let db = self.db();
        let mut stmt = db.prepare(&format!(
            "SELECT {SUMMARY_COLUMNS} FROM messages m
             WHERE m.seq < ?1
               AND (?2 IS NULL OR m.direction = ?2)
               AND (?3 IS NULL OR instr(m.from_search, lower(?3)) > 0)
               AND (?4 IS NULL OR instr(m.to_search, lower(?4)) > 0)
               AND (?5 IS NULL OR instr(lower(coalesce(m.subject, '')), lower(?5)) > 0)
               AND (?6 IS NULL OR m.received_at >= ?6)
             ORDER BY m.seq DESC LIMIT ?7"
        ))?;
        let rows = stmt
            .query_map(
                params![
                    before,
                    f.direction.map(Direction::as_str),
                    f.from,
                    f.to,
                    f.subject,
                    f.since,
                    f.limit as i64 + 1
                ],
                summary,
            )?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Ok(page(rows, f.limit, |seq, _| seq.to_string())))
    }

    /// Threads, most recently active first.
    pub fn threads(
        &self,
        limit: usize,
        cursor: Option<&str>,
    ) -> anyhow::Result<Result<Page, String>> {
        let (last_before, seq_before) = match cursor.map(decode_cursor) {
            None => (i64::MAX, i64::MAX),
            Some(Some(pos)) if pos.len() == 2 => (pos[0], pos[1]),
            Some(_) => return Ok(Err("cursor is not one this API returned".into())),
        };
        let db = self.db();
        let mut stmt = db.prepare(
            "SELECT t.seq, t.id, t.subject, t.created_at, t.last_at,
                    (SELECT count(*) FROM messages m WHERE m.thread_id = t.id)
             FROM threads t
             WHERE t.last_at < ?1 OR (t.last_at = ?1 AND t.seq < ?2)
             ORDER BY t.last_at DESC, t.seq DESC LIMIT ?3",
        )?;
        let rows = stmt
            .query_map(params![last_before, seq_before, limit as i64 + 1], |r| {
                let last_at: i64 = r.get(4)?;
                Ok((
                    r.get::<_, i64>(0)?,
                    json!({
                        "id": r.get::<_, String>(1)?,
                        "subject": r.get::<_, Option<String>>(2)?,
                        "createdAt": iso8601_millis(r.get::<_, i64>(3)? * 1000),
                        "lastMessageAt": iso8601_millis(last_at * 1000),
                        "lastAt": last_at,
                        "messageCount": r.get::<_, i64>(5)?,
                    }),
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut page = page(rows, limit, |seq, item| format!("{}:{seq}", item["lastAt"]));
        for item in &mut page.items {
            if let Value::Object(o) = item {
                o.remove("lastAt");
            }
        }
        Ok(Ok(page))
    }

    /// A thread with its messages in reading order (depth-first over the
    /// replies, siblings by date). An id merged into another thread
    /// resolves to that thread, whose own id the answer carries.
    pub fn thread(&self, id: &str) -> anyhow::Result<Option<Value>> {
        let db = self.db();
        let current: Option<String> = db
            .query_row(
                "SELECT id FROM threads WHERE id = ?1
                 UNION ALL SELECT thread_id FROM thread_aliases WHERE alias = ?1 LIMIT 1",
                [id],
                |r| r.get(0),
            )
            .optional()?;
        let Some(current) = current else {
            return Ok(None);
        };
        let subject: Option<String> = db.query_row(
            "SELECT subject FROM threads WHERE id = ?1",
            [&current],
            |r| r.get(0),
        )?;
        let mut stmt = db.prepare(&format!(
            "SELECT {SUMMARY_COLUMNS}, m.message_id, m.ancestry, coalesce(m.date, m.received_at)
             FROM messages m WHERE m.thread_id = ?1 ORDER BY m.seq"
        ))?;
        let rows = stmt
            .query_map([&current], |r| {
                let (seq, item) = summary(r)?;
                let ancestry: Vec<String> =
                    serde_json::from_str(&r.get::<_, String>(12)?).unwrap_or_default();
                let node = Node {
                    message_id: r.get(11)?,
                    ancestry,
                    date: r.get(13)?,
                    seq,
                };
                Ok((node, item))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let nodes: Vec<Node> = rows.iter().map(|(n, _)| n.clone()).collect();
        let messages: Vec<Value> = thread::order(&nodes)
            .into_iter()
            .map(|(i, parent, depth)| {
                let mut item = rows[i].1.clone();
                item["depth"] = json!(depth);
                item["parentId"] = json!(parent.map(|p| rows[p].1["id"].clone()));
                item
            })
            .collect();
        Ok(Some(json!({
            "id": current,
            "subject": subject,
            "messageCount": messages.len(),
            "messages": messages,
        })))
    }
}

/// Cuts `limit + 1` rows to a page with the cursor of what follows.
fn page(
    mut rows: Vec<(i64, Value)>,
    limit: usize,
    position: impl Fn(i64, &Value) -> String,
) -> Page {
    let next = (rows.len() > limit).then(|| {
        rows.truncate(limit);
        rows.last()
            .map(|(seq, item)| encode_cursor(&position(*seq, item)))
    });
    Page {
        items: rows.into_iter().map(|(_, v)| v).collect(),
        next: next.flatten(),
    }
}
