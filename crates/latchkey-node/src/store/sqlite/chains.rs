//! Chains, fork evidence, the op feed and replication cursors in SQLite. Every function runs
//! inside the transaction its caller opened ([`super::SqliteStore`]).

use latchkey_proto::keys::DeviceId;
use rusqlite::{params, Connection, OptionalExtension};

use super::{device_from_blob, to_i64, to_u64};
use crate::error::Result;
use crate::store::{DeviceRows, FeedRow, ForkRow, OpRow, Stale};

/// Every device that has a stored genesis.
pub fn known_devices(conn: &Connection) -> Result<Vec<DeviceId>> {
    let mut stmt = conn.prepare_cached("SELECT device FROM ops WHERE seq = 0")?;
    let rows = stmt.query_map([], |r| device_from_blob(r.get(0)?))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn version(conn: &Connection, device: &DeviceId) -> Result<u64> {
    let v: Option<i64> = conn
        .prepare_cached("SELECT version FROM chain_versions WHERE device = ?1")?
        .query_row([&device.0[..]], |r| r.get(0))
        .optional()?;
    Ok(v.map(to_u64).unwrap_or(0))
}

/// A device's stored chain, in the order the ops were stored (each after its parent or anchor),
/// its recorded fork ops, and its version.
pub fn load_device(conn: &Connection, device: &DeviceId) -> Result<DeviceRows> {
    let mut stmt =
        conn.prepare_cached("SELECT bytes FROM ops WHERE device = ?1 ORDER BY cursor")?;
    let ops = stmt
        .query_map([&device.0[..]], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut stmt = conn.prepare_cached("SELECT theirs FROM forks WHERE device = ?1 ORDER BY id")?;
    let forks = stmt
        .query_map([&device.0[..]], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(DeviceRows {
        ops,
        forks,
        version: version(conn, device)?,
    })
}

/// Changes a device's stored chain if its version is still `expected`: `rows` are added, the
/// ops with ids in `removed` (a branch the device did not endorse, revocations of an ended era)
/// go. Returns the new version.
pub fn update_ops(
    conn: &Connection,
    device: &DeviceId,
    expected: u64,
    rows: &[OpRow],
    removed: &[[u8; 32]],
    now_ms: u64,
) -> Result<core::result::Result<u64, Stale>> {
    if version(conn, device)? != expected {
        return Ok(Err(Stale));
    }
    let next = expected + 1;
    conn.prepare_cached(
        "INSERT INTO chain_versions (device, version) VALUES (?1, ?2)
         ON CONFLICT (device) DO UPDATE SET version = excluded.version",
    )?
    .execute(params![&device.0[..], to_i64(next)])?;
    let mut stmt = conn.prepare_cached("DELETE FROM ops WHERE device = ?1 AND op_id = ?2")?;
    for id in removed {
        stmt.execute(params![&device.0[..], &id[..]])?;
    }
    let mut stmt = conn.prepare_cached(
        "INSERT INTO ops (device, seq, op_id, bytes, accepted_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for row in rows {
        stmt.execute(params![
            &device.0[..],
            to_i64(row.seq),
            &row.id[..],
            &row.bytes,
            to_i64(now_ms)
        ])?;
    }
    Ok(Ok(next))
}

/// Records fork evidence; returns whether it was new.
pub fn insert_fork(
    conn: &Connection,
    device: &DeviceId,
    seq: u64,
    theirs_id: &[u8; 32],
    ours: &[u8],
    theirs: &[u8],
    now_ms: u64,
) -> Result<bool> {
    let n = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO forks (device, seq, theirs_id, ours, theirs, found_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            &device.0[..],
            to_i64(seq),
            &theirs_id[..],
            ours,
            theirs,
            to_i64(now_ms)
        ])?;
    Ok(n == 1)
}

pub fn forks(conn: &Connection, device: &DeviceId) -> Result<Vec<ForkRow>> {
    let mut stmt =
        conn.prepare_cached("SELECT seq, ours, theirs FROM forks WHERE device = ?1 ORDER BY id")?;
    let rows = stmt.query_map([&device.0[..]], |r| {
        Ok(ForkRow {
            seq: to_u64(r.get(0)?),
            ours: r.get(1)?,
            theirs: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Ops in acceptance order after `after` (one writer: the autoincrement cursor is commit order).
pub fn feed(conn: &Connection, after: u64, limit: usize) -> Result<Vec<FeedRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT cursor, device, bytes FROM ops WHERE cursor > ?1 ORDER BY cursor LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![to_i64(after), to_i64(limit as u64)], |r| {
        Ok(FeedRow {
            cursor: to_u64(r.get(0)?),
            device: device_from_blob(r.get(1)?)?,
            bytes: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn peer_cursor(conn: &Connection, peer: &str) -> Result<u64> {
    let cursor: Option<i64> = conn
        .prepare_cached("SELECT cursor FROM peer_cursors WHERE peer = ?1")?
        .query_row([peer], |r| r.get(0))
        .optional()?;
    Ok(cursor.map(to_u64).unwrap_or(0))
}

pub fn set_peer_cursor(conn: &Connection, peer: &str, cursor: u64) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO peer_cursors (peer, cursor) VALUES (?1, ?2)
         ON CONFLICT (peer) DO UPDATE SET cursor = excluded.cursor",
    )?
    .execute(params![peer, to_i64(cursor)])?;
    Ok(())
}
