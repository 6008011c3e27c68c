//! The group-commit writer thread.

use rusqlite::{Connection, params};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::{CommitRequest, NewEntry};
use crate::types::unix_now;

/// Upper bound on one transaction, so one huge batch cannot hold every
/// waiting session hostage.
const MAX_BATCH_BYTES: usize = 64 * 1024 * 1024;

pub(super) fn run(mut conn: Connection, mut requests: mpsc::UnboundedReceiver<CommitRequest>) {
    while let Some(first) = requests.blocking_recv() {
        let mut batch_bytes = size_of(&first);
        let mut batch = vec![first];
        // Everything that queued up while the previous fsync ran joins this
        // transaction.
        while batch_bytes < MAX_BATCH_BYTES {
            match requests.try_recv() {
                Ok(next) => {
                    batch_bytes += size_of(&next);
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        let result = commit_batch(&mut conn, &batch);
        if let Err(e) = &result {
            tracing::error!(error = %format!("{e:#}"), requests = batch.len(), "queue commit failed");
        }
        for request in batch {
            let outcome = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(anyhow::anyhow!("queue commit failed: {e:#}")),
            };
            let _ = request.done.send(outcome);
        }
    }
}

fn size_of(request: &CommitRequest) -> usize {
    request.entries.iter().map(|e| e.body.len()).sum()
}

fn commit_batch(conn: &mut Connection, batch: &[CommitRequest]) -> anyhow::Result<()> {
    let tx = conn.transaction()?;
    for entry in batch.iter().flat_map(|r| &r.entries) {
        insert(&tx, entry)?;
    }
    // With synchronous=FULL this commit fsyncs the WAL: the durability point.
    tx.commit()?;
    Ok(())
}

/// A second commit of an entry that is already queued (the same message id
/// for the same tenant) changes nothing and succeeds: redelivered inbound
/// mail (SES ingest) derives its id from its source and relies on this.
pub(super) fn insert(tx: &rusqlite::Transaction<'_>, entry: &NewEntry) -> anyhow::Result<()> {
    let now = unix_now();
    let sha = Sha256::digest(&entry.body);
    let inserted = tx
        .prepare_cached(
            "INSERT INTO queue_entries(message_id, tenant, direction, mail_from, source, size, sha256, body, received_at, meta)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT(message_id, tenant) DO NOTHING",
        )?
        .execute(params![
        entry.message_id.as_str(),
        entry.tenant,
        entry.direction.as_str(),
        entry.mail_from,
        entry.source,
        entry.body.len() as i64,
        sha.as_slice(),
        entry.body,
            now,
            (!entry.meta.is_null()).then(|| entry.meta.to_string()),
        ])?;
    if inserted == 0 {
        return Ok(());
    }
    let seq = tx.last_insert_rowid();
    let mut stmt = tx.prepare_cached(
        "INSERT OR IGNORE INTO queue_recipients(seq, recipient, next_attempt_at) VALUES (?1, ?2, ?3)",
    )?;
    for rcpt in &entry.recipients {
        stmt.execute(params![seq, rcpt, now])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{Direction, NewEntry, Queue, list};
    use crate::types::MessageId;

    #[tokio::test]
    async fn committing_the_same_message_for_the_same_tenant_again_is_a_no_op() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, _writer, _) = Queue::open(dir.path()).unwrap();
        let entry = NewEntry {
            message_id: MessageId::generate(),
            tenant: "acme".into(),
            direction: Direction::Inbound,
            mail_from: "a@b.test".into(),
            source: "a@b.test".into(),
            recipients: vec!["c@acme.test".into()],
            body: b"first".to_vec(),
            meta: serde_json::Value::Null,
        };
        queue.commit(vec![entry.clone()]).await.unwrap();
        let again = NewEntry {
            body: b"second".to_vec(),
            recipients: vec!["d@acme.test".into()],
            ..entry.clone()
        };
        queue.commit(vec![again]).await.unwrap();
        let other_tenant = NewEntry {
            tenant: "beta".into(),
            ..entry.clone()
        };
        queue.commit(vec![other_tenant]).await.unwrap();
        let listed = list(dir.path()).unwrap();
        assert_eq!(listed.len(), 2, "one entry per tenant");
        assert_eq!(
            listed[0].recipients,
            ["c@acme.test"],
            "the first commit stands"
        );
    }
}
