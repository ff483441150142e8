//! Mailbox messages in SQLite. Every function runs inside the transaction its caller opened.

use rusqlite::{params, Connection};

use super::{to_i64, to_u64};
use crate::error::Result;
use crate::store::{MailboxId, MailboxRefusal, MessageRow, PostQuota};

/// Live messages across all mailboxes.
pub fn live_total(conn: &Connection, now_ms: u64) -> Result<u64> {
    let n: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM mailbox_messages WHERE expires_ms > ?1")?
        .query_row([to_i64(now_ms)], |r| r.get(0))?;
    Ok(to_u64(n))
}

/// Stores a message unless its sender's share of the mailbox, or its address's share of the
/// node, is full; returns its id. A refusal writes nothing.
pub fn post(
    conn: &Connection,
    mailbox: &MailboxId,
    body: &[u8],
    expires_ms: u64,
    now_ms: u64,
    quota: &PostQuota,
) -> Result<Result<u64, MailboxRefusal>> {
    let now = to_i64(now_ms);
    // Each count stops at its cap: a post costs at most a cap's worth of index entries, however
    // many messages the address or sender holds (a node with lifted caps, or many expired ones).
    let by_sender: i64 = conn
        .prepare_cached(
            "SELECT COUNT(*) FROM (SELECT 1 FROM mailbox_messages
             WHERE mailbox = ?1 AND sender = ?2 AND expires_ms > ?3 LIMIT ?4)",
        )?
        .query_row(
            params![&mailbox[..], &quota.sender, now, cap(quota.per_sender)],
            |r| r.get(0),
        )?;
    if to_u64(by_sender) >= quota.per_sender as u64 {
        return Ok(Err(MailboxRefusal::MailboxFull));
    }
    let by_address: i64 = conn
        .prepare_cached(
            "SELECT COUNT(*) FROM (SELECT 1 FROM mailbox_messages
             WHERE address = ?1 AND expires_ms > ?2 LIMIT ?3)",
        )?
        .query_row(params![&quota.address, now, cap(quota.per_address)], |r| {
            r.get(0)
        })?;
    if to_u64(by_address) >= quota.per_address as u64 {
        return Ok(Err(MailboxRefusal::AddressFull));
    }
    conn.prepare_cached(
        "INSERT INTO mailbox_messages (mailbox, body, expires_ms, sender, address)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        &mailbox[..],
        body,
        to_i64(expires_ms),
        &quota.sender,
        &quota.address
    ])?;
    Ok(Ok(to_u64(conn.last_insert_rowid())))
}

/// A quota as a SQL `LIMIT`.
fn cap(quota: usize) -> i64 {
    i64::try_from(quota).unwrap_or(i64::MAX)
}

/// Live messages of a mailbox with id > `after`, oldest first.
pub fn read(
    conn: &Connection,
    mailbox: &MailboxId,
    after: u64,
    now_ms: u64,
    limit: usize,
) -> Result<Vec<MessageRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, body, expires_ms FROM mailbox_messages
         WHERE mailbox = ?1 AND id > ?2 AND expires_ms > ?3 ORDER BY id LIMIT ?4",
    )?;
    let rows = stmt.query_map(
        params![
            &mailbox[..],
            to_i64(after),
            to_i64(now_ms),
            to_i64(limit as u64)
        ],
        |r| {
            Ok(MessageRow {
                id: to_u64(r.get(0)?),
                body: r.get(1)?,
                expires_ms: to_u64(r.get(2)?),
            })
        },
    )?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Deletes every expired message; returns how many.
pub fn purge(conn: &Connection, now_ms: u64) -> Result<usize> {
    Ok(conn
        .prepare_cached("DELETE FROM mailbox_messages WHERE expires_ms <= ?1")?
        .execute([to_i64(now_ms)])?)
}
