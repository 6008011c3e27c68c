//! Start-up recovery: every acknowledged message is still in the queue after
//! a crash (SQLite's WAL replays it); what we add is the check that nothing
//! stored is corrupt, and quarantine for what is.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, params};
use sha2::{Digest, Sha256};

use super::path;
use crate::control::open_sqlite;
use crate::types::unix_now;

#[derive(Debug, Default)]
pub struct RecoveryReport {
    /// Entries waiting in the queue after recovery.
    pub queued: usize,
    /// (message id, reason) of entries moved to the quarantine table.
    pub quarantined: Vec<(String, String)>,
    /// Where an unreadable queue database was moved.
    pub database_moved_to: Option<PathBuf>,
}

pub(super) fn recover(data_dir: &Path) -> anyhow::Result<RecoveryReport> {
    let db_path = path(data_dir);
    let mut report = RecoveryReport::default();
    if !db_path.exists() {
        return Ok(report);
    }
    let conn = match open_checked(&db_path) {
        Ok(conn) => conn,
        Err(e) => {
            let moved = move_aside(data_dir, &db_path)?;
            tracing::error!(
                error = %format!("{e:#}"),
                moved_to = %moved.display(),
                "queue database is corrupt; moved to quarantine, starting an empty queue"
            );
            report.database_moved_to = Some(moved);
            return Ok(report);
        }
    };
    report.quarantined = quarantine_bad_entries(&conn)?;
    for (message_id, reason) in &report.quarantined {
        tracing::error!(message_id, reason, "queue entry quarantined");
    }
    report.queued = conn.query_row("SELECT count(*) FROM queue_entries", [], |r| r.get(0))?;
    Ok(report)
}

fn open_checked(db_path: &Path) -> anyhow::Result<Connection> {
    let conn = open_sqlite(db_path)?;
    let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    if check != "ok" {
        anyhow::bail!("quick_check: {check}");
    }
    super::migrate(&conn)?;
    Ok(conn)
}

/// Moves the database and its WAL files into `data/quarantine/`, kept for an
/// operator to salvage.
fn move_aside(data_dir: &Path, db_path: &Path) -> anyhow::Result<PathBuf> {
    let dir = data_dir.join("quarantine");
    std::fs::create_dir_all(&dir)?;
    let target = dir.join(format!("queue-{}.db", unix_now()));
    for suffix in ["", "-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", db_path.display()));
        if from.exists() {
            std::fs::rename(&from, format!("{}{suffix}", target.display()))?;
        }
    }
    Ok(target)
}

/// Finds entries whose body no longer matches its checksum, or that lost
/// their envelope, and moves them to the quarantine table.
fn quarantine_bad_entries(conn: &Connection) -> anyhow::Result<Vec<(String, String)>> {
    let mut bad = Vec::new();
    {
        let mut stmt = conn.prepare(
            "SELECT e.seq, e.message_id, e.sha256, e.body,
                    (SELECT count(*) FROM queue_recipients r WHERE r.seq = e.seq),
                    e.mail_from
             FROM queue_entries e",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let seq: i64 = row.get(0)?;
            let message_id: String = row.get::<_, Option<String>>(1)?.unwrap_or_default();
            let sha: Vec<u8> = row.get::<_, Option<Vec<u8>>>(2)?.unwrap_or_default();
            let body: Vec<u8> = row
                .get::<_, Option<Vec<u8>>>(3)
                .ok()
                .flatten()
                .unwrap_or_default();
            let recipients: i64 = row.get(4)?;
            let reason = if Sha256::digest(&body).as_slice() != sha.as_slice() {
                Some("body checksum mismatch")
            } else if recipients == 0 {
                Some("no recipients")
            } else if message_id.is_empty() {
                Some("no message id")
            } else {
                None
            };
            if let Some(reason) = reason {
                bad.push((seq, message_id, reason.to_string()));
            }
        }
    }
    for (seq, _, reason) in &bad {
        conn.execute(
            "INSERT INTO quarantine(message_id, tenant, reason, envelope, body, quarantined_at)
             SELECT message_id, tenant, ?2,
                    json_object('from', mail_from, 'direction', direction, 'recipients',
                        (SELECT json_group_array(recipient) FROM queue_recipients WHERE seq = ?1)),
                    body, ?3
             FROM queue_entries WHERE seq = ?1",
            params![seq, reason, unix_now()],
        )?;
        conn.execute("DELETE FROM queue_recipients WHERE seq = ?1", [seq])?;
        conn.execute("DELETE FROM queue_entries WHERE seq = ?1", [seq])?;
    }
    Ok(bad
        .into_iter()
        .map(|(_, id, reason)| (id, reason))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::super::{Direction, NewEntry, Queue, list};
    use crate::types::MessageId;

    fn entry(body: &[u8]) -> NewEntry {
        NewEntry {
            message_id: MessageId::generate(),
            tenant: "t".into(),
            direction: Direction::Inbound,
            mail_from: "a@b.test".into(),
            source: "a@b.test".into(),
            recipients: vec!["c@d.test".into()],
            body: body.to_vec(),
            meta: serde_json::Value::Null,
        }
    }

    #[tokio::test]
    async fn corrupt_bodies_are_quarantined_and_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (good, bad) = (entry(b"good"), entry(b"bad"));
        {
            let (queue, writer, _) = Queue::open(dir.path()).unwrap();
            queue.commit(vec![good.clone(), bad.clone()]).await.unwrap();
            drop(queue);
            writer.join();
        }
        let conn = crate::control::open_sqlite(&super::path(dir.path())).unwrap();
        conn.execute(
            "UPDATE queue_entries SET body = X'00' WHERE message_id = ?1",
            [bad.message_id.as_str()],
        )
        .unwrap();
        drop(conn);
        let (_queue, _writer, report) = Queue::open(dir.path()).unwrap();
        assert_eq!(report.queued, 1);
        assert_eq!(report.quarantined.len(), 1);
        assert_eq!(report.quarantined[0].0, bad.message_id.as_str());
        let listed = list(dir.path()).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].message_id, good.message_id.as_str());
    }

    #[tokio::test]
    async fn an_unreadable_database_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(super::path(dir.path()), vec![0x55; 8192]).unwrap();
        let (queue, _writer, report) = Queue::open(dir.path()).unwrap();
        let moved = report.database_moved_to.expect("database moved");
        assert!(moved.exists());
        queue.commit(vec![entry(b"after")]).await.unwrap();
        assert_eq!(list(dir.path()).unwrap().len(), 1);
    }
}
