//! The consent log's tables. A database from before them gains them at open (no schema
//! version is spent: nothing older changes meaning). Entries are stored by `(device, seq)`,
//! so a second entry at a held seq can never be stored beside the first; the autoincrement
//! `cursor` is the order they were accepted in, which the consent feed replicates by.

use latchkey_proto::keys::DeviceId;
use rusqlite::{params, Connection, OptionalExtension};

use super::{to_i64, to_u64};
use crate::error::{Error, Result};
use crate::store::{EntryRow, FeedRow, ForkRow, Stale};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS consents (
    cursor      INTEGER PRIMARY KEY AUTOINCREMENT,
    device      BLOB NOT NULL,
    seq         INTEGER NOT NULL,
    hash        BLOB NOT NULL,
    bytes       BLOB NOT NULL,
    accepted_ms INTEGER NOT NULL,
    UNIQUE (device, seq)
);
CREATE TABLE IF NOT EXISTS consent_forks (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    device      BLOB NOT NULL,
    seq         INTEGER NOT NULL,
    theirs_hash BLOB NOT NULL,
    ours        BLOB NOT NULL,
    theirs      BLOB NOT NULL,
    found_ms    INTEGER NOT NULL,
    UNIQUE (device, seq, theirs_hash)
);
";

/// Creates the tables if they are missing.
pub fn create(conn: &Connection) -> Result<()> {
    conn.execute_batch(SCHEMA)?;
    Ok(())
}

/// Every stored entry of a device, in seq order.
pub fn load(conn: &Connection, device: &DeviceId) -> Result<Vec<Vec<u8>>> {
    let mut stmt =
        conn.prepare_cached("SELECT bytes FROM consents WHERE device = ?1 ORDER BY seq")?;
    let rows = stmt.query_map([&device.0[..]], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// One page of a device's entries with seq ≥ `from`: at most `max_entries` of them and, past
/// the first, at most `max_bytes` in all. Also says whether more entries follow the page.
pub fn page(
    conn: &Connection,
    device: &DeviceId,
    from: u64,
    max_entries: usize,
    max_bytes: usize,
) -> Result<(Vec<Vec<u8>>, bool)> {
    let mut stmt = conn.prepare_cached(
        "SELECT bytes FROM consents WHERE device = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3",
    )?;
    // One more than the page holds, to know whether more follow.
    let mut rows = stmt.query(params![
        &device.0[..],
        to_i64(from),
        to_i64(max_entries as u64 + 1)
    ])?;
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut total = 0usize;
    while let Some(row) = rows.next()? {
        let bytes: Vec<u8> = row.get(0)?;
        if out.len() == max_entries || (!out.is_empty() && total + bytes.len() > max_bytes) {
            return Ok((out, true));
        }
        total += bytes.len();
        out.push(bytes);
    }
    Ok((out, false))
}

#[cfg(test)]
/// How many entries a device's log holds (its last seq: seqs run from 1 without gaps).
pub fn len(conn: &Connection, device: &DeviceId) -> Result<u64> {
    let n: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM consents WHERE device = ?1")?
        .query_row([&device.0[..]], |r| r.get(0))?;
    Ok(to_u64(n))
}

/// Appends `rows` (consecutive seqs, verified by the caller) to a device's log. Answers
/// [`Stale`], storing nothing, unless they continue exactly what is stored: the caller's view
/// of the log must never run ahead of the disk.
pub fn append(
    conn: &Connection,
    device: &DeviceId,
    rows: &[EntryRow],
    now_ms: u64,
) -> Result<core::result::Result<(), Stale>> {
    let Some(first) = rows.first() else {
        return Ok(Ok(()));
    };
    // Checked before writing anything: the caller's transaction may hold other work.
    if let Some((_, row)) = rows
        .iter()
        .enumerate()
        .find(|(i, row)| row.seq != first.seq + *i as u64)
    {
        return Err(Error::Internal(format!(
            "consent entries for {device} are not consecutive at seq {}",
            row.seq
        )));
    }
    let tx = conn;
    let last: Option<i64> = tx
        .prepare_cached("SELECT MAX(seq) FROM consents WHERE device = ?1")?
        .query_row([&device.0[..]], |r| r.get(0))
        .optional()?
        .flatten();
    let have = last.map(to_u64).unwrap_or(0);
    if first.seq != have + 1 {
        return Ok(Err(Stale));
    }
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO consents (device, seq, hash, bytes, accepted_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for row in rows {
            stmt.execute(params![
                &device.0[..],
                to_i64(row.seq),
                &row.hash[..],
                &row.bytes,
                to_i64(now_ms)
            ])?;
        }
    }
    Ok(Ok(()))
}

/// Records a conflicting entry as evidence; returns whether it was new.
pub fn insert_fork(
    conn: &Connection,
    device: &DeviceId,
    seq: u64,
    theirs_hash: &[u8; 32],
    ours: &[u8],
    theirs: &[u8],
    now_ms: u64,
) -> Result<bool> {
    let n = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO consent_forks (device, seq, theirs_hash, ours, theirs, found_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            &device.0[..],
            to_i64(seq),
            &theirs_hash[..],
            ours,
            theirs,
            to_i64(now_ms)
        ])?;
    Ok(n == 1)
}

/// The hashes of the conflicting entries on record for a device.
pub fn fork_hashes(conn: &Connection, device: &DeviceId) -> Result<Vec<[u8; 32]>> {
    let mut stmt =
        conn.prepare_cached("SELECT theirs_hash FROM consent_forks WHERE device = ?1")?;
    let rows = stmt.query_map([&device.0[..]], |r| {
        let blob: Vec<u8> = r.get(0)?;
        blob.try_into().map_err(|_| {
            rusqlite::Error::FromSqlConversionFailure(
                0,
                rusqlite::types::Type::Blob,
                "a consent fork hash is not 32 bytes".into(),
            )
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The evidence on record for a device, oldest first.
pub fn forks(conn: &Connection, device: &DeviceId) -> Result<Vec<ForkRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, ours, theirs FROM consent_forks WHERE device = ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map([&device.0[..]], |r| {
        Ok(ForkRow {
            seq: to_u64(r.get(0)?),
            ours: r.get(1)?,
            theirs: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Entries of every device in acceptance order after `after` (the consent feed).
pub fn feed(conn: &Connection, after: u64, limit: usize) -> Result<Vec<FeedRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT cursor, device, bytes FROM consents WHERE cursor > ?1 ORDER BY cursor LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![to_i64(after), to_i64(limit as u64)], |r| {
        let blob: Vec<u8> = r.get(1)?;
        let device: [u8; 32] = blob.try_into().map_err(|_| {
            rusqlite::Error::FromSqlConversionFailure(
                1,
                rusqlite::types::Type::Blob,
                "device id is not 32 bytes".into(),
            )
        })?;
        Ok(FeedRow {
            cursor: to_u64(r.get(0)?),
            device: DeviceId(device),
            bytes: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seq: u64, byte: u8) -> EntryRow {
        EntryRow {
            seq,
            hash: [byte; 32],
            bytes: vec![byte; 10 + seq as usize],
        }
    }

    #[test]
    fn append_only_continues_the_stored_log() {
        let conn = Connection::open_in_memory().unwrap();
        create(&conn).unwrap();
        let d = DeviceId([7; 32]);
        let other = DeviceId([8; 32]);
        append(&conn, &d, &[row(1, 1), row(2, 2)], 5)
            .unwrap()
            .unwrap();
        append(&conn, &other, &[row(1, 9)], 5).unwrap().unwrap();
        // A gap, a repeat of a held seq, and a non-consecutive run all store nothing.
        assert_eq!(append(&conn, &d, &[row(4, 4)], 5).unwrap(), Err(Stale));
        assert_eq!(append(&conn, &d, &[row(2, 3)], 5).unwrap(), Err(Stale));
        append(&conn, &d, &[row(3, 3), row(5, 5)], 5).unwrap_err();
        assert_eq!(len(&conn, &d).unwrap(), 2);
        assert_eq!(
            load(&conn, &d).unwrap(),
            vec![row(1, 1).bytes, row(2, 2).bytes]
        );
        append(&conn, &d, &[row(3, 3)], 5).unwrap().unwrap();

        let (page1, more) = page(&conn, &d, 2, 1, 1 << 20).unwrap();
        assert_eq!((page1, more), (vec![row(2, 2).bytes], true));
        let (all, more) = page(&conn, &d, 0, 10, 1 << 20).unwrap();
        assert_eq!((all.len(), more), (3, false));
        // The byte budget cuts a page after its first entry, never before it.
        let (cut, more) = page(&conn, &d, 1, 10, 1).unwrap();
        assert_eq!((cut.len(), more), (1, true));

        let feed_rows = feed(&conn, 0, 10).unwrap();
        assert_eq!(feed_rows.len(), 4);
        assert_eq!(feed_rows[2].device, other);
        assert_eq!(feed(&conn, feed_rows[3].cursor, 10).unwrap().len(), 0);
    }

    #[test]
    fn fork_evidence_is_kept_once() {
        let conn = Connection::open_in_memory().unwrap();
        create(&conn).unwrap();
        let d = DeviceId([7; 32]);
        assert!(insert_fork(&conn, &d, 2, &[1; 32], b"ours", b"theirs", 1).unwrap());
        assert!(!insert_fork(&conn, &d, 2, &[1; 32], b"ours", b"theirs", 2).unwrap());
        assert_eq!(fork_hashes(&conn, &d).unwrap(), vec![[1; 32]]);
        let f = forks(&conn, &d).unwrap();
        assert_eq!((f[0].seq, f[0].theirs.as_slice()), (2, &b"theirs"[..]));
    }
}
