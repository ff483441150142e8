//! Invitation blobs in SQLite. Every function runs inside the transaction its caller opened.

use rusqlite::{params, Connection, OptionalExtension};

use super::to_i64;
use crate::error::Result;
use crate::invites::{InviteQuota, InviteRefusal, Stored};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS invites (
    id         BLOB PRIMARY KEY,
    body       BLOB NOT NULL,
    expires_ms INTEGER NOT NULL,
    address    BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS invites_by_expiry ON invites (expires_ms);
CREATE INDEX IF NOT EXISTS invites_by_address ON invites (address, expires_ms);
";

/// Creates the table if it is missing (an older database gains it; no schema version spent).
pub fn create(conn: &Connection) -> Result<()> {
    conn.execute_batch(SCHEMA)?;
    Ok(())
}

/// Stores `body` under `id` durably, unless other bytes are there or a cap is reached. An
/// expired blob under the id (not yet purged) counts as absent.
pub fn put(
    conn: &Connection,
    id: &[u8; 32],
    body: &[u8],
    expires_ms: u64,
    now_ms: u64,
    quota: &InviteQuota,
) -> Result<std::result::Result<Stored, InviteRefusal>> {
    let tx = conn;
    let now = to_i64(now_ms);
    let existing: Option<Vec<u8>> = tx
        .prepare_cached("SELECT body FROM invites WHERE id = ?1 AND expires_ms > ?2")?
        .query_row(params![&id[..], now], |r| r.get(0))
        .optional()?;
    if let Some(existing) = existing {
        return Ok(if existing == body {
            Ok(Stored::Same)
        } else {
            Err(InviteRefusal::Exists)
        });
    }
    let count = |sql: &str, p: &[&dyn rusqlite::ToSql]| -> rusqlite::Result<u64> {
        tx.query_row(sql, p, |r| r.get::<_, i64>(0))
            .map(|n| u64::try_from(n).unwrap_or(0))
    };
    if count(
        "SELECT COUNT(*) FROM invites WHERE address = ?1 AND expires_ms > ?2",
        &[&quota.address, &now],
    )? >= quota.per_address as u64
    {
        return Ok(Err(InviteRefusal::AddressFull));
    }
    if count(
        "SELECT COUNT(*) FROM invites WHERE expires_ms > ?1",
        &[&now],
    )? >= quota.capacity as u64
    {
        return Ok(Err(InviteRefusal::NodeFull));
    }
    tx.prepare_cached(
        "INSERT OR REPLACE INTO invites (id, body, expires_ms, address) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![&id[..], body, to_i64(expires_ms), &quota.address])?;
    Ok(Ok(Stored::Created))
}

/// The live blob under `id`, if any.
pub fn get(conn: &Connection, id: &[u8; 32], now_ms: u64) -> Result<Option<Vec<u8>>> {
    Ok(conn
        .prepare_cached("SELECT body FROM invites WHERE id = ?1 AND expires_ms > ?2")?
        .query_row(params![&id[..], to_i64(now_ms)], |r| r.get(0))
        .optional()?)
}

/// Deletes every expired blob; returns how many.
pub fn purge(conn: &Connection, now_ms: u64) -> Result<usize> {
    Ok(conn
        .prepare_cached("DELETE FROM invites WHERE expires_ms <= ?1")?
        .execute([to_i64(now_ms)])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(per_address: usize, capacity: usize) -> InviteQuota {
        InviteQuota {
            address: vec![127, 0, 0, 1],
            per_address,
            capacity,
        }
    }

    #[test]
    fn write_once_caps_and_expiry() {
        let conn = Connection::open_in_memory().unwrap();
        create(&conn).unwrap();
        let q = quota(2, 10);
        assert_eq!(
            put(&conn, &[1; 32], b"a", 100, 0, &q).unwrap(),
            Ok(Stored::Created)
        );
        assert_eq!(
            put(&conn, &[1; 32], b"a", 100, 0, &q).unwrap(),
            Ok(Stored::Same)
        );
        assert_eq!(
            put(&conn, &[1; 32], b"b", 100, 0, &q).unwrap(),
            Err(InviteRefusal::Exists)
        );
        assert_eq!(
            put(&conn, &[2; 32], b"c", 100, 0, &q).unwrap(),
            Ok(Stored::Created)
        );
        assert_eq!(
            put(&conn, &[3; 32], b"d", 100, 0, &q).unwrap(),
            Err(InviteRefusal::AddressFull)
        );
        assert_eq!(
            put(&conn, &[3; 32], b"d", 100, 0, &quota(5, 2)).unwrap(),
            Err(InviteRefusal::NodeFull)
        );
        assert_eq!(get(&conn, &[1; 32], 99).unwrap(), Some(b"a".to_vec()));
        assert_eq!(get(&conn, &[1; 32], 100).unwrap(), None);
        // Expired: the id is free again, even before the purge.
        assert_eq!(
            put(&conn, &[1; 32], b"e", 300, 100, &q).unwrap(),
            Ok(Stored::Created)
        );
        assert_eq!(purge(&conn, 200).unwrap(), 1);
        assert_eq!(get(&conn, &[1; 32], 200).unwrap(), Some(b"e".to_vec()));
    }
}
